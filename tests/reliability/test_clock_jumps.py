"""Time-based saving keeps its cadence when the wall clock jumps forwards or backwards.

The saver hook's timer measures intervals on a monotonic clock (here the test's, handed in
with ``clock=`` and driven by the step: one second per step, no sleeping); that the default
clock is ``time.monotonic`` is ``tests/session/test_timer.py``'s to prove. ``time.time``,
which the saver records in each checkpoint, is patched to jump by days and years in both
directions mid-run. The saved steps must be exactly those of the same run without jumps:
a jump neither floods saves (forward) nor suppresses them (backward), as TF's wall-clock
timer would.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import trainhooks

DAY = 86400.0
JUMPS = {7: 3 * DAY, 15: -365 * DAY, 23: 3600.0, 31: -2 * DAY}  # step -> wall-clock jump


class Clocks:
    """A monotonic clock advanced by the training step and a wall clock that jumps."""

    def __init__(self, jumps: dict[int, float]) -> None:
        self.monotonic = 1000.0
        self.offset = 0.0
        self.jumps = jumps
        self._real_time = time.time

    def wall(self) -> float:
        return self._real_time() + self.offset

    def step(self, step: int) -> None:
        self.monotonic += 1.0
        self.offset += self.jumps.get(step, 0.0)


class SavedSteps(trainhooks.CheckpointSaverListener):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def after_save(self, session: Any, global_step_value: int) -> None:
        self.steps.append(global_step_value)


def run_with_clocks(
    directory: Path, jumps: dict[int, float], monkeypatch: pytest.MonkeyPatch
) -> list[int]:
    """40 steps with a save every 10 s of monotonic time; returns the saved steps."""
    import torch

    clocks = Clocks(jumps)
    monkeypatch.setattr(time, "time", clocks.wall)
    listener = SavedSteps()
    state = {"w": torch.zeros(4)}
    hook = trainhooks.CheckpointSaverHook(
        directory,
        save_secs=10,
        saver=trainhooks.Saver(max_to_keep=None),
        listeners=[listener],
        clock=lambda: clocks.monotonic,
    )

    def train_step(step: int) -> None:
        state["w"].add_(1.0)
        clocks.step(step)

    with trainhooks.MonitoredTrainingSession(
        checkpoint_dir=directory,
        state=state,
        hooks=[trainhooks.StopAtStepHook(last_step=40)],
        chief_only_hooks=[hook],
        save_checkpoint_secs=None,
        save_summaries_steps=None,
        log_step_count_steps=None,
    ) as session:
        while not session.should_stop():
            session.run(train_step, session.global_step + 1)
    monkeypatch.undo()
    return listener.steps


def test_wall_clock_jumps_change_no_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    steady = run_with_clocks(tmp_path / "steady", {}, monkeypatch)
    jumping = run_with_clocks(tmp_path / "jumping", JUMPS, monkeypatch)
    assert steady == [0, 10, 20, 30, 40]
    assert jumping == steady
    saved = [info.step for info in trainhooks.list_checkpoints(tmp_path / "jumping")]
    assert saved == steady
