"""The traces of listener-contract.md, asserted call by call, in both saving modes.

``sync`` is TF's order. In ``async`` mode (``async_save=True``) a save is a snapshot and
its ``after_save`` runs at the first step boundary after the checkpoint is durable; to make
that boundary deterministic, each step first waits until the saves made so far are durable
(``_support.session.DurableSaver``), so ``after_save(S)`` runs at the boundary of step S+1. With
no stop requested, the two traces are the same (docs/hooks-and-listeners.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _support.session import Counter, DurableSaver, RecordingListener, save_pair
from trainhooks import (
    CheckpointSaverHook,
    CheckpointSaverListener,
    MonitoredTrainingSession,
    StopAtStepHook,
    latest_checkpoint,
    list_checkpoints,
    verify_checkpoint,
)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def saver_hook_for(
    mode: str, directory: Path, listeners: list[Any], save_steps: int
) -> Iterator[tuple[CheckpointSaverHook, Callable[[], None]]]:
    """The hook of a test session, and what a step calls first (async: wait until durable)."""
    if mode == "sync":  # the hook's own saver, as a TF user gets it
        yield CheckpointSaverHook(directory, save_steps=save_steps, listeners=listeners), _nothing
        return
    with DurableSaver() as saver:
        hook = CheckpointSaverHook(
            directory, save_steps=save_steps, listeners=listeners, saver=saver, async_save=True
        )
        yield hook, saver.wait_durable


def _nothing() -> None:
    pass


def train(
    directory: Path,
    counter: Counter,
    listeners: list[Any],
    *,
    save_steps: int,
    last_step: int | None = None,
    num_steps: int | None = None,
    mode: str = "sync",
) -> int:
    """One session as a TF user writes it; returns how many runs it made."""
    runs_before = counter.runs
    with saver_hook_for(mode, directory, listeners, save_steps) as (saver_hook, before_step):

        def step() -> dict[str, float]:
            before_step()
            return counter.step()

        with MonitoredTrainingSession(
            checkpoint_dir=directory,
            state=counter.state,
            chief_only_hooks=[saver_hook],
            hooks=[StopAtStepHook(num_steps=num_steps, last_step=last_step)],
            save_summaries_steps=None,
            log_step_count_steps=None,
        ) as sess:
            while not sess.should_stop():
                sess.run(step)
    return counter.runs - runs_before


def steps_on_disk(directory: Path) -> list[int]:
    return [info.step for info in list_checkpoints(directory)]


def test_save_steps_3_stop_at_10_saves_0_3_6_9_10_then_end(
    tmp_path: Path, mode: str, trace: list[str], counter: Counter
) -> None:
    runs = train(
        tmp_path, counter, [RecordingListener("a", trace)], save_steps=3, mode=mode, last_step=10
    )

    assert trace == ["a.begin", *save_pair("a", 0, 3, 6, 9, 10), "a.end(10)"]
    assert runs == 10
    assert steps_on_disk(tmp_path) == [0, 3, 6, 9, 10]  # max_to_keep=5 keeps all five


def test_stop_from_after_save_stops_after_that_step_without_an_extra_save(
    tmp_path: Path, mode: str, trace: list[str], counter: Counter
) -> None:
    stopper = RecordingListener("a", trace, stop_from_step=4)

    runs = train(tmp_path, counter, [stopper], save_steps=2, mode=mode, last_step=10)

    if mode == "sync":
        assert trace == ["a.begin", *save_pair("a", 0, 2, 4), "a.end(4)"]
        assert runs == 4
        assert steps_on_disk(tmp_path) == [0, 2, 4]
    else:  # after_save(4) runs once step 4 is durable, at step 5: the stop comes there
        assert trace == ["a.begin", *save_pair("a", 0, 2, 4, 5), "a.end(5)"]
        assert runs == 5
        assert steps_on_disk(tmp_path) == [0, 2, 4, 5]


def test_every_listener_gets_after_save_before_a_requested_stop(
    tmp_path: Path, mode: str, trace: list[str], counter: Counter
) -> None:
    a = RecordingListener("a", trace, stop_from_step=4)
    b = RecordingListener("b", trace)

    train(tmp_path, counter, [a, b], save_steps=2, mode=mode, last_step=10)

    both_after_4 = ["a.after_save(4)", "b.after_save(4)"]
    if mode == "sync":
        assert trace[-6:-2] == ["a.before_save(4)", "b.before_save(4)", *both_after_4]
        assert trace[-2:] == ["a.end(4)", "b.end(4)"]
    else:  # the stop comes at step 5, when step 4 is durable; the final save is step 5
        assert trace[-10:-6] == ["a.before_save(4)", "b.before_save(4)", *both_after_4]
        assert trace[-6:] == [
            "a.before_save(5)",
            "b.before_save(5)",
            "a.after_save(5)",
            "b.after_save(5)",
            "a.end(5)",
            "b.end(5)",
        ]
    assert trace[:2] == ["a.begin", "b.begin"]


def test_stop_requested_at_the_creation_save_is_ignored(
    tmp_path: Path, mode: str, trace: list[str], counter: Counter
) -> None:
    class StopAtZeroOnly(RecordingListener):
        def after_save(self, session: Any, global_step_value: int) -> bool:
            super().after_save(session, global_step_value)
            return global_step_value == 0

    runs = train(
        tmp_path, counter, [StopAtZeroOnly("a", trace)], save_steps=5, mode=mode, last_step=7
    )

    assert runs == 7
    assert trace == ["a.begin", *save_pair("a", 0, 5, 7), "a.end(7)"]


def test_restart_restores_step_7_and_continues_to_14(
    tmp_path: Path, mode: str, trace: list[str], counter: Counter
) -> None:
    runs1 = train(
        tmp_path, counter, [RecordingListener("a", trace)], save_steps=5, mode=mode, last_step=7
    )
    assert runs1 == 7
    assert trace == ["a.begin", *save_pair("a", 0, 5, 7), "a.end(7)"]

    trace.clear()
    fresh = Counter()  # a new process: state starts from scratch and must be restored
    runs2 = train(
        tmp_path, fresh, [RecordingListener("b", trace)], save_steps=5, mode=mode, last_step=14
    )

    assert trace == ["b.begin", *save_pair("b", 7, 12, 14), "b.end(14)"]
    assert runs2 == 7
    assert fresh.value == 14  # restored 7 in place, then 7 runs
    assert steps_on_disk(tmp_path) == [0, 5, 7, 12, 14]


def test_restart_does_not_rewrite_the_unchanged_restored_checkpoint(
    tmp_path: Path, mode: str, trace: list[str], counter: Counter
) -> None:
    train(tmp_path, counter, [], save_steps=5, mode=mode, last_step=7)
    step7 = list_checkpoints(tmp_path)[-1]
    manifest_before = os.stat(step7.path / "manifest.json")

    train(
        tmp_path, Counter(), [RecordingListener("b", trace)], save_steps=5, mode=mode, last_step=14
    )

    manifest_after = os.stat(step7.path / "manifest.json")
    assert (manifest_after.st_ino, manifest_after.st_mtime_ns) == (
        manifest_before.st_ino,
        manifest_before.st_mtime_ns,
    )
    assert save_pair("b", 7) == trace[1:3]  # the listeners were still called for step 7


def test_restart_at_last_step_runs_no_step_but_saves_and_ends(
    tmp_path: Path, mode: str, trace: list[str], counter: Counter
) -> None:
    train(tmp_path, counter, [], save_steps=5, mode=mode, last_step=7)
    on_disk = steps_on_disk(tmp_path)

    fresh = Counter()
    runs = train(
        tmp_path, fresh, [RecordingListener("b", trace)], save_steps=5, mode=mode, last_step=7
    )

    assert runs == 0
    assert trace == ["b.begin", *save_pair("b", 7), "b.end(7)"]
    assert fresh.value == 7
    assert steps_on_disk(tmp_path) == on_disk


def test_restart_past_last_step_runs_no_step(
    tmp_path: Path, mode: str, trace: list[str], counter: Counter
) -> None:
    train(tmp_path, counter, [], save_steps=5, mode=mode, last_step=7)

    runs = train(
        tmp_path, Counter(), [RecordingListener("b", trace)], save_steps=5, mode=mode, last_step=3
    )

    assert runs == 0
    assert trace == ["b.begin", *save_pair("b", 7), "b.end(7)"]


def test_num_steps_counts_from_the_restored_step(
    tmp_path: Path, mode: str, trace: list[str], counter: Counter
) -> None:
    train(tmp_path, counter, [], save_steps=5, mode=mode, last_step=7)

    runs = train(
        tmp_path, Counter(), [RecordingListener("b", trace)], save_steps=5, mode=mode, num_steps=3
    )

    assert runs == 3
    assert trace == ["b.begin", *save_pair("b", 7, 10), "b.end(10)"]


def test_exception_skips_final_save_and_end_and_keeps_committed_checkpoints(
    tmp_path: Path, mode: str, trace: list[str], counter: Counter
) -> None:
    listeners = [RecordingListener("a", trace)]
    with saver_hook_for(mode, tmp_path, listeners, save_steps=2) as (hook, before_step):

        def failing_step() -> dict[str, float]:
            before_step()
            if counter.runs == 5:
                raise ValueError("bad batch")
            return counter.step()

        with pytest.raises(ValueError, match="bad batch"):  # noqa: SIM117 - the raise is the point
            with MonitoredTrainingSession(state=counter.state, chief_only_hooks=[hook]) as sess:
                while not sess.should_stop():
                    sess.run(failing_step)

    assert trace == ["a.begin", *save_pair("a", 0, 2, 4)]  # no final save, no end()
    assert steps_on_disk(tmp_path) == [0, 2, 4]
    # The session released the directory: a new run can resume from step 4 and save.
    assert train(tmp_path, Counter(), [], save_steps=2, mode=mode, last_step=6) == 2
    assert steps_on_disk(tmp_path) == [0, 2, 4, 6]


def test_listener_with_own_schedule_handles_last_checkpoint_in_end_only_once(
    tmp_path: Path, mode: str, counter: Counter
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
    train(tmp_path / "odd", counter, [odd], save_steps=3, mode=mode, last_step=10)  # 0 3 6 9 10
    train(tmp_path / "even", Counter(), [even], save_steps=3, mode=mode, last_step=9)  # 0 3 6 9

    assert odd.evaluated == [3, 9, 10]
    assert even.evaluated == [3, 9]


def test_listeners_get_the_session_with_its_state_and_global_step(
    tmp_path: Path, mode: str, trace: list[str], counter: Counter
) -> None:
    listener = RecordingListener("a", trace)

    train(tmp_path, counter, [listener], save_steps=4, mode=mode, last_step=8)

    assert [step for _, step, _ in listener.seen] == [0, 4, 8]
    assert all(state is counter.state for _, _, state in listener.seen)


def test_state_saved_at_each_step_is_the_state_after_that_many_runs(
    tmp_path: Path, mode: str, counter: Counter
) -> None:
    from trainhooks import load

    train(tmp_path, counter, [], save_steps=3, mode=mode, last_step=7)

    for info in list_checkpoints(tmp_path):
        np.testing.assert_array_equal(load(info.path)["w"], np.full(4, info.step, np.float32))


# -- async mode only -------------------------------------------------------------------


class DurabilityListener(RecordingListener):
    """Records, at each ``after_save``, the session's step then and whether the checkpoint
    was committed and verified on disk at that moment."""

    def __init__(self, name: str, trace: list[str], directory: Path) -> None:
        super().__init__(name, trace)
        self.directory = directory
        self.delivered: list[tuple[int, int]] = []  # (checkpoint step, session step)

    def after_save(self, session: Any, global_step_value: int) -> bool:
        newest = latest_checkpoint(self.directory)
        assert newest is not None and newest.step >= global_step_value
        verify_checkpoint(self.directory / f"ckpt-{global_step_value:012d}")
        self.delivered.append((global_step_value, session.global_step))
        return super().after_save(session, global_step_value)


def test_async_after_save_runs_at_the_first_step_boundary_after_the_checkpoint_is_durable(
    tmp_path: Path, trace: list[str], counter: Counter
) -> None:
    listener = DurabilityListener("a", trace, tmp_path)

    train(tmp_path, counter, [listener], save_steps=3, mode="async", last_step=7)

    # each step waited for the saves made so far: delivery at the next boundary; the final
    # save (step 7) is delivered in end(), before end() is called, with the session at 7
    assert listener.delivered == [(0, 1), (3, 4), (6, 7), (7, 7)]
    assert trace == ["a.begin", *save_pair("a", 0, 3, 6, 7), "a.end(7)"]


def test_async_trace_without_a_stop_is_the_sync_trace_whatever_the_write_takes(
    tmp_path: Path, trace: list[str]
) -> None:
    """Steps that do not wait for durability: after_save runs whenever the write is done,
    yet the listeners see the same calls in the same order as a synchronous run."""
    counter = Counter()
    listener = RecordingListener("a", trace)
    hook = CheckpointSaverHook(tmp_path, save_steps=2, listeners=[listener], async_save=True)
    with MonitoredTrainingSession(
        state=counter.state, chief_only_hooks=[hook], hooks=[StopAtStepHook(last_step=11)]
    ) as sess:
        while not sess.should_stop():
            sess.run(counter.step)

    assert trace == ["a.begin", *save_pair("a", 0, 2, 4, 6, 8, 10, 11), "a.end(11)"]
    for info in list_checkpoints(tmp_path):  # every snapshot holds its own step's state
        from trainhooks import load

        np.testing.assert_array_equal(load(info.path)["w"], np.full(4, info.step, np.float32))
