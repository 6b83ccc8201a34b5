"""The traces of listener-contract.md, asserted call by call."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _support.session import Counter, RecordingListener, save_pair
from trainhooks import (
    CheckpointSaverHook,
    CheckpointSaverListener,
    MonitoredTrainingSession,
    StopAtStepHook,
    list_checkpoints,
)


def train(
    directory: Path,
    counter: Counter,
    listeners: list[Any],
    *,
    save_steps: int,
    last_step: int | None = None,
    num_steps: int | None = None,
) -> int:
    """One session as a TF user writes it; returns how many runs it made."""
    saver_hook = CheckpointSaverHook(directory, save_steps=save_steps, listeners=listeners)
    runs_before = counter.runs
    with MonitoredTrainingSession(
        checkpoint_dir=directory,
        state=counter.state,
        chief_only_hooks=[saver_hook],
        hooks=[StopAtStepHook(num_steps=num_steps, last_step=last_step)],
        save_summaries_steps=None,
        log_step_count_steps=None,
    ) as sess:
        while not sess.should_stop():
            sess.run(counter.step)
    return counter.runs - runs_before


def steps_on_disk(directory: Path) -> list[int]:
    return [info.step for info in list_checkpoints(directory)]


def test_save_steps_3_stop_at_10_saves_0_3_6_9_10_then_end(
    tmp_path: Path, trace: list[str], counter: Counter
) -> None:
    runs = train(tmp_path, counter, [RecordingListener("a", trace)], save_steps=3, last_step=10)

    assert trace == ["a.begin", *save_pair("a", 0, 3, 6, 9, 10), "a.end(10)"]
    assert runs == 10
    assert steps_on_disk(tmp_path) == [0, 3, 6, 9, 10]  # max_to_keep=5 keeps all five


def test_stop_from_after_save_stops_after_that_step_without_an_extra_save(
    tmp_path: Path, trace: list[str], counter: Counter
) -> None:
    stopper = RecordingListener("a", trace, stop_from_step=4)

    runs = train(tmp_path, counter, [stopper], save_steps=2, last_step=10)

    assert trace == ["a.begin", *save_pair("a", 0, 2, 4), "a.end(4)"]
    assert runs == 4
    assert steps_on_disk(tmp_path) == [0, 2, 4]


def test_every_listener_gets_after_save_before_a_requested_stop(
    tmp_path: Path, trace: list[str], counter: Counter
) -> None:
    a = RecordingListener("a", trace, stop_from_step=4)
    b = RecordingListener("b", trace)

    train(tmp_path, counter, [a, b], save_steps=2, last_step=10)

    assert trace[-6:] == [
        "a.before_save(4)",
        "b.before_save(4)",
        "a.after_save(4)",
        "b.after_save(4)",
        "a.end(4)",
        "b.end(4)",
    ]
    assert trace[:2] == ["a.begin", "b.begin"]


def test_stop_requested_at_the_creation_save_is_ignored(
    tmp_path: Path, trace: list[str], counter: Counter
) -> None:
    class StopAtZeroOnly(RecordingListener):
        def after_save(self, session: Any, global_step_value: int) -> bool:
            super().after_save(session, global_step_value)
            return global_step_value == 0

    runs = train(tmp_path, counter, [StopAtZeroOnly("a", trace)], save_steps=5, last_step=7)

    assert runs == 7
    assert trace == ["a.begin", *save_pair("a", 0, 5, 7), "a.end(7)"]


def test_restart_restores_step_7_and_continues_to_14(
    tmp_path: Path, trace: list[str], counter: Counter
) -> None:
    runs1 = train(tmp_path, counter, [RecordingListener("a", trace)], save_steps=5, last_step=7)
    assert runs1 == 7
    assert trace == ["a.begin", *save_pair("a", 0, 5, 7), "a.end(7)"]

    trace.clear()
    fresh = Counter()  # a new process: state starts from scratch and must be restored
    runs2 = train(tmp_path, fresh, [RecordingListener("b", trace)], save_steps=5, last_step=14)

    assert trace == ["b.begin", *save_pair("b", 7, 12, 14), "b.end(14)"]
    assert runs2 == 7
    assert fresh.value == 14  # restored 7 in place, then 7 runs
    assert steps_on_disk(tmp_path) == [0, 5, 7, 12, 14]


def test_restart_does_not_rewrite_the_unchanged_restored_checkpoint(
    tmp_path: Path, trace: list[str], counter: Counter
) -> None:
    train(tmp_path, counter, [], save_steps=5, last_step=7)
    step7 = list_checkpoints(tmp_path)[-1]
    manifest_before = os.stat(step7.path / "manifest.json")

    train(tmp_path, Counter(), [RecordingListener("b", trace)], save_steps=5, last_step=14)

    manifest_after = os.stat(step7.path / "manifest.json")
    assert (manifest_after.st_ino, manifest_after.st_mtime_ns) == (
        manifest_before.st_ino,
        manifest_before.st_mtime_ns,
    )
    assert save_pair("b", 7) == trace[1:3]  # the listeners were still called for step 7


def test_restart_at_last_step_runs_no_step_but_saves_and_ends(
    tmp_path: Path, trace: list[str], counter: Counter
) -> None:
    train(tmp_path, counter, [], save_steps=5, last_step=7)
    on_disk = steps_on_disk(tmp_path)

    fresh = Counter()
    runs = train(tmp_path, fresh, [RecordingListener("b", trace)], save_steps=5, last_step=7)

    assert runs == 0
    assert trace == ["b.begin", *save_pair("b", 7), "b.end(7)"]
    assert fresh.value == 7
    assert steps_on_disk(tmp_path) == on_disk


def test_restart_past_last_step_runs_no_step(
    tmp_path: Path, trace: list[str], counter: Counter
) -> None:
    train(tmp_path, counter, [], save_steps=5, last_step=7)

    runs = train(tmp_path, Counter(), [RecordingListener("b", trace)], save_steps=5, last_step=3)

    assert runs == 0
    assert trace == ["b.begin", *save_pair("b", 7), "b.end(7)"]


def test_num_steps_counts_from_the_restored_step(
    tmp_path: Path, trace: list[str], counter: Counter
) -> None:
    train(tmp_path, counter, [], save_steps=5, last_step=7)

    runs = train(tmp_path, Counter(), [RecordingListener("b", trace)], save_steps=5, num_steps=3)

    assert runs == 3
    assert trace == ["b.begin", *save_pair("b", 7, 10), "b.end(10)"]


def test_exception_skips_final_save_and_end_and_keeps_committed_checkpoints(
    tmp_path: Path, trace: list[str], counter: Counter
) -> None:
    def failing_step() -> dict[str, float]:
        if counter.runs == 5:
            raise ValueError("bad batch")
        return counter.step()

    hook = CheckpointSaverHook(tmp_path, save_steps=2, listeners=[RecordingListener("a", trace)])
    with pytest.raises(ValueError, match="bad batch"):  # noqa: SIM117 - the raise is the point
        with MonitoredTrainingSession(state=counter.state, chief_only_hooks=[hook]) as sess:
            while not sess.should_stop():
                sess.run(failing_step)

    assert trace == ["a.begin", *save_pair("a", 0, 2, 4)]  # no final save, no end()
    assert steps_on_disk(tmp_path) == [0, 2, 4]
    # The session released the directory: a new run can resume from step 4 and save.
    assert train(tmp_path, Counter(), [], save_steps=2, last_step=6) == 2
    assert steps_on_disk(tmp_path) == [0, 2, 4, 6]


def test_listener_with_own_schedule_handles_last_checkpoint_in_end_only_once(
    tmp_path: Path, counter: Counter
) -> None:
    class EveryOtherSave(CheckpointSaverListener):
        """Evaluates every second save, and the last checkpoint in end() if not done yet."""

        def __init__(self) -> None:
            self.saves = 0
            self.evaluated: list[int] = []

        def after_save(self, session: Any, global_step_value: int) -> None:
            self.saves += 1
            if self.saves % 2 == 0:
                self.evaluated.append(global_step_value)

        def end(self, session: Any, global_step_value: int) -> None:
            if not self.evaluated or self.evaluated[-1] != global_step_value:
                self.evaluated.append(global_step_value)

    odd, even = EveryOtherSave(), EveryOtherSave()
    train(tmp_path / "odd", counter, [odd], save_steps=3, last_step=10)  # saves 0 3 6 9 10
    train(tmp_path / "even", Counter(), [even], save_steps=3, last_step=9)  # saves 0 3 6 9

    assert odd.evaluated == [3, 9, 10]
    assert even.evaluated == [3, 9]


def test_listeners_get_the_session_with_its_state_and_global_step(
    tmp_path: Path, trace: list[str], counter: Counter
) -> None:
    listener = RecordingListener("a", trace)

    train(tmp_path, counter, [listener], save_steps=4, last_step=8)

    assert [step for _, step, _ in listener.seen] == [0, 4, 8]
    assert all(state is counter.state for _, _, state in listener.seen)


def test_state_saved_at_each_step_is_the_state_after_that_many_runs(
    tmp_path: Path, counter: Counter
) -> None:
    from trainhooks import load

    train(tmp_path, counter, [], save_steps=3, last_step=7)

    for info in list_checkpoints(tmp_path):
        np.testing.assert_array_equal(load(info.path)["w"], np.full(4, info.step, np.float32))
