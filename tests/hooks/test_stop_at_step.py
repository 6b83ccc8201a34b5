"""StopAtStepHook: absolute and relative limits, and no extra step on a finished restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trainhooks import CheckpointSaverHook, MonitoredSession, StopAtStepHook


def count_runs(
    hook: StopAtStepHook,
    *,
    checkpoint_dir: Path | None = None,
    steps_per_run: int = 1,
    extra_hooks: list[Any] | None = None,
) -> tuple[int, int]:
    """Runs made and the final global step of one session with ``hook``."""
    state = {"w": np.zeros(1)}
    runs = 0
    with MonitoredSession(
        hooks=[hook, *(extra_hooks or [])],
        state=state,
        checkpoint_dir=checkpoint_dir,
        steps_per_run=steps_per_run,
    ) as sess:
        while not sess.should_stop():
            sess.run(lambda: None)
            runs += 1
    return runs, sess.global_step


def test_last_step_stops_at_that_global_step() -> None:
    assert count_runs(StopAtStepHook(last_step=4)) == (4, 4)


def test_num_steps_runs_that_many_steps() -> None:
    assert count_runs(StopAtStepHook(num_steps=3)) == (3, 3)


def test_stop_is_at_or_past_last_step_with_steps_per_run() -> None:
    assert count_runs(StopAtStepHook(last_step=5), steps_per_run=2) == (3, 6)


def test_num_steps_counts_from_the_restored_step(tmp_path: Path) -> None:
    count_runs(
        StopAtStepHook(last_step=5),
        checkpoint_dir=tmp_path,
        extra_hooks=[CheckpointSaverHook(tmp_path, save_steps=100)],
    )

    hook = StopAtStepHook(num_steps=2)
    assert count_runs(hook, checkpoint_dir=tmp_path) == (2, 7)
    assert hook.last_step == 7


@pytest.mark.parametrize("last_step", [5, 3])
def test_restart_at_or_past_last_step_runs_no_step(tmp_path: Path, last_step: int) -> None:
    count_runs(
        StopAtStepHook(last_step=5),
        checkpoint_dir=tmp_path,
        extra_hooks=[CheckpointSaverHook(tmp_path, save_steps=100)],
    )

    assert count_runs(StopAtStepHook(last_step=last_step), checkpoint_dir=tmp_path) == (0, 5)


def test_num_steps_zero_runs_no_step() -> None:
    assert count_runs(StopAtStepHook(num_steps=0)) == (0, 0)


def test_last_step_zero_on_a_fresh_session_runs_no_step() -> None:
    # TF runs one step (it looks only in after_run) and ends at step 1; docs/deviations.md
    assert count_runs(StopAtStepHook(last_step=0)) == (0, 0)


def test_steps_per_run_stops_at_the_first_multiple_past_last_step() -> None:
    # 14 with 3 steps per run: 15 here, 18 in TF (its hook reads a step one run stale)
    assert count_runs(StopAtStepHook(last_step=14), steps_per_run=3) == (5, 15)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "one of num_steps or last_step"),
        ({"num_steps": 1, "last_step": 1}, "only one of num_steps"),
        ({"num_steps": -1}, ">= 0"),
    ],
)
def test_invalid_arguments_are_value_errors(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StopAtStepHook(**kwargs)
