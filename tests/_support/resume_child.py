"""Child of the resume-check tests: a small torch training that can forget part of its state.

``python resume_child.py '<json list of configs>'`` imports torch once, then forks one
worker per config; each trains through ``MonitoredTrainingSession`` and SIGKILLs itself
at the start of step ``kill_at``. The child prints ``exit <index> <wait status>`` per
worker. The test process imports this module too and resumes with :func:`train`.

The training has randomness that is deterministic given the seed (dropout drawing from
torch's global generator, saved through ``RNGState``) and a step-decayed learning rate.
Variants: ``"complete"`` saves everything and draws the batch of step ``s`` from a
generator seeded with ``s``; ``"no_scheduler"`` leaves the scheduler out of ``state``;
``"no_data_position"`` reads batches from a stream whose position is not saved, so a
resumed run starts its data again from the beginning.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from typing import Any


class BatchStream:
    """Endless seeded batches; its position lives only in memory (the forgotten state)."""

    def __init__(self, torch: Any) -> None:
        self._torch = torch
        self._generator = torch.Generator().manual_seed(77)

    def next(self) -> tuple[Any, Any]:
        inputs = self._torch.randn(16, 4, generator=self._generator)
        return inputs, inputs.sum(dim=1, keepdim=True)


def build(torch: Any, variant: str) -> tuple[dict[str, Any], Any]:
    """The state mapping of ``variant`` and the step function training it."""
    import trainhooks

    torch.manual_seed(1234)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    # LambdaLR, not a chainable scheduler: restarted, it sets another learning rate
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1 / (1 + epoch))
    state: dict[str, Any] = {
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "rng": trainhooks.RNGState(),
    }
    if variant == "no_scheduler":
        del state["scheduler"]
    stream = BatchStream(torch)

    def batch(step: int) -> tuple[Any, Any]:
        if variant == "no_data_position":
            return stream.next()
        generator = torch.Generator().manual_seed(step)
        inputs = torch.randn(16, 4, generator=generator)
        return inputs, inputs.sum(dim=1, keepdim=True)

    def train_step(step: int, kill_at: int | None) -> dict[str, float]:
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        inputs, targets = batch(step)
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return {"loss": loss.item()}

    return state, train_step


def train(config: dict[str, Any]) -> int:
    """Train ``config["variant"]`` in ``config["directory"]`` up to ``last_step``."""
    import torch

    import trainhooks

    state, train_step = build(torch, config["variant"])
    check = trainhooks.ResumeCheckHook(on_divergence=config.get("on_divergence", "warn"))
    with trainhooks.MonitoredTrainingSession(
        checkpoint_dir=config["directory"],
        state=state,
        hooks=[trainhooks.StopAtStepHook(last_step=config["last_step"])],
        save_checkpoint_secs=None,
        save_checkpoint_steps=config.get("save_steps", 5),
        save_summaries_steps=None,
        log_step_count_steps=None,
        resume_check=check,
    ) as session:
        while not session.should_stop():
            session.run(train_step, session.global_step + 1, config.get("kill_at"))
        return session.global_step


def main(configs: list[dict[str, Any]]) -> None:
    import torch

    torch.set_num_threads(1)  # no thread pool exists at fork time
    for index, config in enumerate(configs):
        pid = os.fork()
        if pid == 0:
            code = 0  # exits normally only when kill_at never came
            try:
                train(config)
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(f"exit {index} {status}", flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
