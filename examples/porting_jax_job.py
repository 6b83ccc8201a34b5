"""A realistic JAX + optax training job on trainhooks: kill it anywhere, run it again, and
it ends bit for bit where an uninterrupted run ends.

The job: an MLP with dropout, optax's AdamW behind gradient clipping on a warmup-cosine
schedule, shuffled batches, an evaluation after every checkpoint, early stopping on the
validation loss and an export of the two most accurate checkpoints. Besides its
listeners, the only lines about trainhooks are the ``state`` dict and the session
(docs/porting.md).

    python examples/porting_jax_job.py --dir runs/jax-job
    python examples/porting_jax_job.py --dir runs/jax-job --kill-at-step 25  # dies
    python examples/porting_jax_job.py --dir runs/jax-job  # resumes at step 20

``--kill-at-step N`` SIGKILLs the process right after step N, as a preemption or the OOM
killer would; a second run with the same ``--dir`` resumes from the newest checkpoint.
Each step prints ``step <n> loss <loss> batch <example indices>``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import trainhooks as th

SEED = 0
FEATURES, CLASSES, HIDDEN = 16, 4, 64
TRAIN_SIZE, VAL_SIZE, BATCH_SIZE = 600, 256, 32
BATCHES_PER_EPOCH = TRAIN_SIZE // BATCH_SIZE  # 18: the last, short batch is dropped
DROPOUT = 0.2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("runs/jax-job"))
    parser.add_argument("--steps", type=int, default=150, help="last step, if not stopped early")
    parser.add_argument("--save-every", type=int, default=10)
    parser.add_argument("--kill-at-step", type=int, default=None, help="SIGKILL after it")
    return parser.parse_args()


def make_data() -> tuple[np.ndarray, np.ndarray]:
    """Examples labelled by a random linear teacher, with some label noise."""
    rng = np.random.default_rng(SEED)
    features = rng.normal(size=(TRAIN_SIZE + VAL_SIZE, FEATURES)).astype(np.float32)
    teacher = rng.normal(size=(FEATURES, CLASSES)).astype(np.float32)
    noise = 0.5 * rng.normal(size=(TRAIN_SIZE + VAL_SIZE, CLASSES)).astype(np.float32)
    return features, (features @ teacher + noise).argmax(axis=1)


def batch_indices(step: int) -> np.ndarray:
    """The examples of step ``step`` (0-based): a pure function of SEED and the step, so
    the data position needs no saving (docs/porting.md, "Data position")."""
    epoch, position = divmod(step, BATCHES_PER_EPOCH)
    order = np.random.default_rng([SEED, epoch]).permutation(TRAIN_SIZE)
    return order[position * BATCH_SIZE : (position + 1) * BATCH_SIZE]


def init_params(key: jax.Array) -> dict[str, dict[str, jax.Array]]:
    hidden_key, out_key = jax.random.split(key)
    return {
        "hidden": {
            "w": jax.random.normal(hidden_key, (FEATURES, HIDDEN)) / np.sqrt(FEATURES),
            "b": jnp.zeros(HIDDEN),
        },
        "out": {
            "w": jax.random.normal(out_key, (HIDDEN, CLASSES)) / np.sqrt(HIDDEN),
            "b": jnp.zeros(CLASSES),
        },
    }


def logits_of(params: Any, x: jax.Array, dropout_key: jax.Array | None) -> jax.Array:
    h = jax.nn.relu(x @ params["hidden"]["w"] + params["hidden"]["b"])
    if dropout_key is not None:
        keep = jax.random.bernoulli(dropout_key, 1 - DROPOUT, h.shape)
        h = jnp.where(keep, h / (1 - DROPOUT), 0.0)
    return h @ params["out"]["w"] + params["out"]["b"]


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    features, labels = make_data()
    x, y = jnp.asarray(features[:TRAIN_SIZE]), jnp.asarray(labels[:TRAIN_SIZE])
    val_x, val_y = jnp.asarray(features[TRAIN_SIZE:]), jnp.asarray(labels[TRAIN_SIZE:])

    schedule = optax.warmup_cosine_decay_schedule(0.0, 3e-2, 10, decay_steps=args.steps)
    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-2)
    )
    init_key, dropout_key = jax.random.split(jax.random.key(SEED))
    params = init_params(init_key)

    @jax.jit
    def train_step(state: dict[str, Any], index: jax.Array) -> tuple[dict[str, Any], jax.Array]:
        key, step_key = jax.random.split(state["key"])

        def loss_fn(params: Any) -> jax.Array:
            return cross_entropy(logits_of(params, x[index], step_key), y[index])

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt = optimizer.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt": opt, "key": key}, loss

    def run_step(index: np.ndarray) -> dict[str, float]:
        new_state, loss = train_step(dict(state), index)
        state.update(new_state)  # JAX state is values: write them back into `state`
        return {"loss": float(loss)}

    def evaluate(session: th.HookSession) -> dict[str, float]:
        logits = logits_of(state["params"], val_x, None)
        accuracy = (logits.argmax(axis=1) == val_y).mean()
        return {"loss": float(cross_entropy(logits, val_y)), "accuracy": float(accuracy)}

    evaluator = th.EvaluationListener(evaluate)
    listeners = [
        evaluator,
        th.BestCheckpointExporter(
            "accuracy", mode="max", keep=2, export_dir=args.dir / "best", source=evaluator
        ),
        th.EarlyStoppingListener("loss", patience=3, min_delta=1e-2, source=evaluator),
    ]
    state = {"params": params, "opt": optimizer.init(params), "key": dropout_key}

    with th.MonitoredTrainingSession(
        checkpoint_dir=args.dir,  # resumes from its newest checkpoint, if there is one
        state=state,  # restored in place: read params, opt and key from it, not from locals
        save_checkpoint_secs=None,  # the saver hook below, with the listeners
        chief_only_hooks=[
            th.CheckpointSaverHook(args.dir, save_steps=args.save_every, listeners=listeners)
        ],
        hooks=[th.StopAtStepHook(last_step=args.steps)],
    ) as session:
        while not session.should_stop():
            index = batch_indices(session.global_step)  # global_step steps are done
            result = session.run(run_step, index)
            step = session.global_step
            print(f"step {step} loss {result['loss']!r} batch {index.tolist()}", flush=True)
            if step == args.kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)  # a preemption, right after step
        print(f"done {session.global_step}", flush=True)


if __name__ == "__main__":
    main()
