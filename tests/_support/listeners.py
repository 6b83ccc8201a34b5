"""A real training run for listener tests: one torch scalar the step adds 1 to."""

from __future__ import annotations

from pathlib import Path

import torch

import trainhooks as th


def train_counter(
    directory: Path,
    listeners: list,
    last_step: int = 20,
    save_steps: int = 2,
    async_save: bool = False,
) -> int:
    """Train to ``last_step`` saving every ``save_steps`` with ``listeners``; return the step
    the session ended at (earlier when a listener stopped it)."""
    weight = torch.zeros(())
    saver_hook = th.CheckpointSaverHook(
        directory, save_steps=save_steps, listeners=listeners, async_save=async_save
    )
    with th.MonitoredTrainingSession(
        state={"w": weight},
        chief_only_hooks=[saver_hook],
        hooks=[th.StopAtStepHook(last_step=last_step)],
    ) as session:
        while not session.should_stop():
            session.run(lambda: weight.add_(1.0))
        return session.global_step
