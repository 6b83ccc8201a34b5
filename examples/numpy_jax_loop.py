"""A training loop with no deep-learning framework: linear regression by gradient descent.

The parameters are plain arrays in the checkpointed ``state`` (JAX arrays when JAX is
installed, NumPy arrays otherwise); ``MonitoredTrainingSession`` saves them every
``--save-every`` steps, an ``EvaluationListener`` reports the validation error after each
save, and a second session on the same directory resumes where the first one stopped.

Run: ``python examples/numpy_jax_loop.py [--dir DIR] [--steps N] [--numpy]``
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import trainhooks as th

TRUE_W = np.array([2.0, -3.0, 0.5])
TRUE_B = 1.0


def make_data(seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(512, 3))
    y = x @ TRUE_W + TRUE_B + 0.1 * rng.normal(size=512)
    return x[:384], y[:384], x[384:], y[384:]


def numpy_step_fn(state: dict, x: np.ndarray, y: np.ndarray, lr: float) -> Callable[[], dict]:
    """One gradient-descent step with hand-written gradients, updating ``state`` in place."""

    def step() -> dict[str, Any]:
        params = state["params"]
        residual = x @ params["w"] + params["b"] - y
        params["w"] = params["w"] - lr * (2.0 / len(y)) * (x.T @ residual)
        params["b"] = params["b"] - lr * 2.0 * residual.mean()
        return {"loss": float(np.mean(residual**2))}

    return step


def jax_step_fn(state: dict, x: np.ndarray, y: np.ndarray, lr: float) -> Callable[[], dict]:
    """The same step with ``jax.grad`` and ``jax.jit``."""
    import jax
    import jax.numpy as jnp

    def loss_fn(params: dict, x: Any, y: Any) -> Any:
        return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    @jax.jit
    def update(params: dict, x: Any, y: Any) -> tuple[dict, Any]:
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), loss

    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def step() -> dict[str, Any]:
        state["params"], loss = update(state["params"], xj, yj)
        return {"loss": float(loss)}

    return step


def train(directory: Path, last_step: int, save_every: int, use_jax: bool) -> dict:
    """Train until ``last_step`` in ``directory``, resuming from its latest checkpoint."""
    x_train, y_train, x_val, y_val = make_data()
    if use_jax:
        import jax.numpy as jnp

        params: dict[str, Any] = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    else:
        params = {"w": np.zeros(3), "b": np.zeros(())}
    state = {"params": params}
    make_step = jax_step_fn if use_jax else numpy_step_fn
    step = make_step(state, x_train, y_train, lr=0.05)

    def validate(session: th.HookSession) -> dict[str, float]:
        p = state["params"]
        mse = float(np.mean((x_val @ np.asarray(p["w"]) + float(p["b"]) - y_val) ** 2))
        print(f"  step {session.global_step:>4}: validation mse {mse:.5f}")
        return {"val_mse": mse}

    evaluator = th.EvaluationListener(validate, output_dir=directory)
    saver_hook = th.CheckpointSaverHook(directory, save_steps=save_every, listeners=[evaluator])
    with th.MonitoredTrainingSession(
        checkpoint_dir=directory,
        state=state,
        chief_only_hooks=[saver_hook],
        hooks=[th.StopAtStepHook(last_step=last_step)],
        save_summaries_steps=None,
        log_step_count_steps=None,
    ) as session:
        if session.global_step:
            print(f"  resumed from step {session.global_step}")
        while not session.should_stop():
            session.run(step)
    # A job resumed at its last step saves nothing, so it evaluates once here instead.
    metrics = evaluator.last_metrics or validate(session)
    return {"params": state["params"], "val_mse": metrics["val_mse"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="checkpoint directory")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--numpy", action="store_true", help="use NumPy even if JAX is there")
    args = parser.parse_args(argv)
    try:
        import jax  # noqa: F401

        use_jax = not args.numpy
    except ImportError:
        use_jax = False
    directory = args.dir or Path(tempfile.mkdtemp(prefix="trainhooks-numpy-"))
    print(f"backend: {'JAX' if use_jax else 'NumPy'}; checkpoints in {directory}")
    print(f"session 1: train to step {args.steps // 2}")
    train(directory, args.steps // 2, args.save_every, use_jax)
    print(f"session 2: same directory, train to step {args.steps}")
    result = train(directory, args.steps, args.save_every, use_jax)
    w = [round(float(v), 3) for v in np.asarray(result["params"]["w"])]
    b = float(result["params"]["b"])
    print(f"learned w = {w}, b = {b:.3f} (true {TRUE_W.tolist()}, {TRUE_B})")
    print(f"final validation mse: {result['val_mse']:.5f}")
    print("checkpoints on disk:", [info.step for info in th.list_checkpoints(directory)])


if __name__ == "__main__":
    main()
