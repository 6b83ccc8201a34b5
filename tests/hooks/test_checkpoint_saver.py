"""CheckpointSaverHook: arguments, secs-based saving, listener errors, savers, no rewrite."""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trainhooks import (
    CheckpointSaverHook,
    CheckpointSaverListener,
    MonitoredSession,
    Saver,
    StopAtStepHook,
    list_checkpoints,
)


class Recorder(CheckpointSaverListener):
    """Records ``method(step)`` for every call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def begin(self) -> None:
        self.calls.append("begin")

    def before_save(self, session: Any, global_step_value: int) -> None:
        self.calls.append(f"before_save({global_step_value})")

    def after_save(self, session: Any, global_step_value: int) -> None:
        self.calls.append(f"after_save({global_step_value})")

    def end(self, session: Any, global_step_value: int) -> None:
        self.calls.append(f"end({global_step_value})")


class Failing(CheckpointSaverListener):
    def __init__(self, method: str, at_step: int | None = None) -> None:
        self.method, self.at_step = method, at_step

    def _maybe_fail(self, method: str, step: int | None) -> None:
        if method == self.method and (self.at_step is None or step == self.at_step):
            raise OSError(f"listener broke in {method}")

    def begin(self) -> None:
        self._maybe_fail("begin", None)

    def before_save(self, session: Any, global_step_value: int) -> None:
        self._maybe_fail("before_save", global_step_value)

    def after_save(self, session: Any, global_step_value: int) -> None:
        self._maybe_fail("after_save", global_step_value)


def make_state() -> dict[str, Any]:
    return {"w": np.zeros(3, dtype=np.float32)}


def run_until(
    hook: CheckpointSaverHook,
    last_step: int,
    state: dict[str, Any] | None = None,
    step_fn: Any = None,
    checkpoint_dir: Path | None = None,
) -> None:
    state = make_state() if state is None else state

    def default_step() -> None:
        state["w"] += 1

    with MonitoredSession(
        hooks=[hook, StopAtStepHook(last_step=last_step)],
        state=state,
        checkpoint_dir=checkpoint_dir,
    ) as sess:
        while not sess.should_stop():
            sess.run(step_fn or default_step)


def steps_in(directory: Path) -> list[int]:
    return [info.step for info in list_checkpoints(directory)]


@pytest.mark.parametrize(
    "kwargs", [{}, {"save_secs": 10, "save_steps": 10}], ids=["neither", "both"]
)
def test_needs_exactly_one_of_save_secs_and_save_steps(tmp_path: Path, kwargs: Any) -> None:
    with pytest.raises(ValueError, match="exactly one of save_secs and save_steps"):
        CheckpointSaverHook(tmp_path, **kwargs)


def test_tf_doc_snippet_without_an_interval_gets_a_value_error_with_the_fix(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match=r"save_steps=1000, listeners=\[\.\.\.\]"):
        CheckpointSaverHook(tmp_path, listeners=[Recorder()])


def test_saver_and_scaffold_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both saver and scaffold"):
        CheckpointSaverHook(tmp_path, save_steps=1, saver=Saver(), scaffold=object())


def test_tf_graph_arguments_are_accepted_and_change_nothing(tmp_path: Path) -> None:
    hook = CheckpointSaverHook(
        tmp_path,
        save_steps=2,
        checkpoint_basename="model.ckpt",
        scaffold=object(),
        save_graph_def=False,
    )
    run_until(hook, last_step=3)

    assert steps_in(tmp_path) == [0, 2, 3]


def test_save_secs_saves_when_its_clock_passes_the_interval(tmp_path: Path) -> None:
    now = [500.0]
    state = make_state()

    def one_second_step() -> None:
        state["w"] += 1
        now[0] += 1.0  # each step takes one (fake) second

    recorder = Recorder()
    run_until(
        CheckpointSaverHook(tmp_path, save_secs=2.5, listeners=[recorder], clock=lambda: now[0]),
        last_step=7,
        state=state,
        step_fn=one_second_step,
    )

    saved = [c for c in recorder.calls if c.startswith("after_save")]
    assert saved == ["after_save(0)", "after_save(3)", "after_save(6)", "after_save(7)"]
    assert steps_in(tmp_path) == [0, 3, 6, 7]


@pytest.mark.parametrize(
    ("method", "at_step", "where"),
    [
        ("begin", None, "Failing.begin()"),
        ("before_save", 2, "Failing.before_save() at step 2"),
        ("after_save", 2, "Failing.after_save() at step 2"),
    ],
)
def test_listener_exception_keeps_its_type_and_gains_a_note(
    tmp_path: Path, method: str, at_step: int | None, where: str
) -> None:
    hook = CheckpointSaverHook(tmp_path, save_steps=2, listeners=[Failing(method, at_step)])

    with pytest.raises(OSError, match=f"listener broke in {method}") as raised:
        run_until(hook, last_step=5)

    notes = getattr(raised.value, "__notes__", [])
    assert any(where in note for note in notes), notes


def test_user_saver_keeps_its_retention_and_stays_open(tmp_path: Path) -> None:
    saver = Saver(max_to_keep=2)
    run_until(CheckpointSaverHook(tmp_path, save_steps=1, saver=saver), last_step=4)

    assert steps_in(tmp_path) == [3, 4]
    saver.save(make_state(), tmp_path, 5)  # the user's saver is still theirs to use
    saver.close()


def test_owned_saver_releases_the_directory_lock_when_the_session_closes(
    tmp_path: Path,
) -> None:
    run_until(CheckpointSaverHook(tmp_path, save_steps=1), last_step=2)

    with Saver() as other:
        other.save(make_state(), tmp_path, 3)  # would raise CheckpointLockedError if held


def test_saving_elsewhere_than_the_restored_directory_writes_the_restored_step(
    tmp_path: Path,
) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    run_until(CheckpointSaverHook(source, save_steps=5), last_step=3)
    recorder = Recorder()

    run_until(
        CheckpointSaverHook(target, save_steps=5, listeners=[recorder]),
        last_step=3,
        checkpoint_dir=source,
    )

    assert steps_in(target) == [3]  # restored step 3, no run: saved to the new directory
    assert recorder.calls == ["begin", "before_save(3)", "after_save(3)", "end(3)"]


def test_hook_can_be_used_by_two_sessions_in_turn(tmp_path: Path) -> None:
    hook = CheckpointSaverHook(tmp_path, save_steps=2)
    state = make_state()
    run_until(hook, last_step=2, state=state, checkpoint_dir=tmp_path)
    run_until(hook, last_step=4, state=state, checkpoint_dir=tmp_path)

    assert steps_in(tmp_path) == [0, 2, 4]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="add_note is Python 3.11+")
def test_note_is_shown_in_the_traceback(tmp_path: Path) -> None:
    import traceback

    hook = CheckpointSaverHook(tmp_path, save_steps=2, listeners=[Failing("after_save", 0)])
    with pytest.raises(OSError) as raised:
        run_until(hook, last_step=1)

    text = "".join(traceback.format_exception(raised.value))
    assert "raised by checkpoint listener Failing.after_save() at step 0" in text


# -- async_save -------------------------------------------------------------------------


class NoAsyncSaver:
    def save(self, state: Any, directory: Any, step: int) -> None:
        pass


def test_async_save_needs_a_saver_with_save_async(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="save_async"):
        CheckpointSaverHook(tmp_path, save_steps=1, saver=NoAsyncSaver(), async_save=True)


def test_async_save_due_while_the_previous_writes_waits_for_it_and_logs_the_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The save of step 1 is held before its rename; the save due at step 2 waits for it
    (after_save(1) comes first, so the listener order is TF's) and the wait is logged."""
    from concurrent.futures import Future

    from _support.session import DurableSaver
    from trainhooks._store import _faults

    saver = DurableSaver()
    recorder = Recorder()

    def release_when_waited_on() -> None:
        assert _faults.wait_blocked("before_rename")
        while len(saver.futures) < 2:
            time.sleep(0.001)  # polls a condition; no timing is assumed
        held: Future[Any] = saver.futures[1]
        while not held._waiters:  # type: ignore[attr-defined]  # the training thread waits
            time.sleep(0.001)
        _faults.release("before_rename")

    _faults.configure("before_rename=block@2")  # hit 1: the save at creation; 2: step 1
    helper = threading.Thread(target=release_when_waited_on)
    helper.start()
    try:
        hook = CheckpointSaverHook(
            tmp_path, save_steps=1, saver=saver, listeners=[recorder], async_save=True
        )
        with saver, caplog.at_level(logging.INFO, logger="trainhooks"):
            run_until(hook, last_step=2)
    finally:
        _faults.configure(None)
        helper.join()

    assert recorder.calls == [
        "begin",
        *("before_save(0)", "after_save(0)", "before_save(1)", "after_save(1)"),
        *("before_save(2)", "after_save(2)", "end(2)"),
    ]
    waits = [r.getMessage() for r in caplog.records if "waited" in r.getMessage()]
    assert any(w.startswith("The save of step 2 waited") for w in waits), waits
    assert steps_in(tmp_path) == [0, 1, 2]
