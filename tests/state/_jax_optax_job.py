"""A small JAX + optax training job run by ``test_jax_kill_resume`` (not a test module).

``python _jax_optax_job.py DIRECTORY LAST_STEP`` trains with ``MonitoredTrainingSession``,
saving ``{"params", "opt", "key"}`` after every step, and resumes from DIRECTORY's newest
checkpoint when there is one. Everything random comes from the key in the state, so the
weights after step ``s`` are the same whatever kills came before. It reports on stdout,
one unbuffered line per event (``start <step>``, ``saved <step>``, ``done <step>``), so
that the parent can SIGKILL it right after a save it has seen.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import optax

import trainhooks as th


def announce(event: str, step: int) -> None:
    os.write(1, f"{event} {step}\n".encode())


class Announce(th.CheckpointSaverListener):
    def after_save(self, session: Any, global_step_value: int) -> None:
        announce("saved", global_step_value)


def make_step(optimizer: optax.GradientTransformation) -> Any:
    def loss(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        y = jnp.sin(x @ jnp.array([1.0, -2.0, 0.5]))
        return jnp.mean((jnp.tanh(x @ params["w"]) @ params["v"] - y) ** 2)

    @jax.jit
    def step(state: dict[str, Any]) -> dict[str, Any]:
        key, batch_key = jax.random.split(state["key"])
        x = jax.random.normal(batch_key, (32, 3))
        grads = jax.grad(loss)(state["params"], x)
        updates, opt = optimizer.update(grads, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt": opt, "key": key}

    return step


def main(directory: str, last_step: int) -> None:
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(3e-2))
    init_key, data_key = jax.random.split(jax.random.key(2024))
    w_key, v_key = jax.random.split(init_key)
    params = {"w": jax.random.normal(w_key, (3, 8)), "v": jax.random.normal(v_key, (8,))}
    state = {"params": params, "opt": optimizer.init(params), "key": data_key}
    step = make_step(optimizer)
    saver_hook = th.CheckpointSaverHook(directory, save_steps=1, listeners=[Announce()])
    with th.MonitoredTrainingSession(
        checkpoint_dir=directory,
        state=state,
        chief_only_hooks=[saver_hook],
        hooks=[th.StopAtStepHook(last_step=last_step)],
        save_summaries_steps=None,
        log_step_count_steps=None,
    ) as session:
        announce("start", session.global_step)
        while not session.should_stop():
            session.run(lambda: state.update(step(dict(state))))
        announce("done", session.global_step)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
