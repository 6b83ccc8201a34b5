"""``session.run`` called from inside a hook, a listener or the step is refused.

The TF idiom ``session.run(self.tensor)`` inside a hook would run, and count, a training
step inside the current one, and make the saver's hooks fire again (a 30-step run ended
at global step 31 with mislabelled checkpoints). It raises and says what to do instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from _support.session import Counter, quiet_session
from trainhooks import (
    CheckpointSaverHook,
    CheckpointSaverListener,
    SessionRunHook,
    StopAtStepHook,
    list_checkpoints,
)


class RunsInAfterSave(CheckpointSaverListener):
    """The TF habit: fetch a value by running the session inside a listener."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def after_save(self, session: Any, global_step_value: int) -> None:
        session.run(self.fn)


class RunsInAfterRun(SessionRunHook):
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def after_run(self, run_context: Any, run_values: Any) -> None:
        run_context.session.run(self.fn)


def test_run_inside_a_listener_raises_and_says_what_to_do(tmp_path: Path, counter: Counter) -> None:
    listener = RunsInAfterSave(counter.step)
    saver = CheckpointSaverHook(tmp_path, save_steps=2, listeners=[listener])
    with (
        pytest.raises(RuntimeError, match="called from inside") as info,
        quiet_session(state=counter.state, chief_only_hooks=[saver]) as sess,
    ):
        sess.run(counter.step)

    message = str(info.value)
    assert "call the function directly" in message and "session.state" in message
    assert "after_create_session" in message  # the save at creation runs the listener
    assert counter.runs == 0  # no step was run
    assert [c.step for c in list_checkpoints(tmp_path)] == [0]  # nor a save mislabelled


def test_run_inside_after_run_raises_and_counts_no_extra_step(counter: Counter) -> None:
    with (
        pytest.raises(RuntimeError, match=r"session.run\(\) was called from inside"),
        quiet_session(hooks=[RunsInAfterRun(counter.step)]) as sess,
    ):
        sess.run(counter.step)

    assert counter.runs == 1 and sess.global_step == 1


def test_run_inside_the_step_function_raises(counter: Counter) -> None:
    with quiet_session(hooks=[StopAtStepHook(last_step=3)]) as sess:
        with pytest.raises(RuntimeError, match="inside"):
            sess.run(lambda: sess.run(counter.step))
        assert sess.global_step == 0
        while not sess.should_stop():  # the session is still usable
            sess.run(counter.step)

    assert sess.global_step == 3 and counter.runs == 3


def test_run_step_fn_inside_a_hook_raises(counter: Counter) -> None:
    class RunsStepFn(SessionRunHook):
        def end(self, session: Any) -> None:
            session.run_step_fn(lambda ctx: ctx.run_with_hooks(counter.step))

    nested = r"run_step_fn\(\) was called from inside a hook's end"
    with pytest.raises(RuntimeError, match=nested), quiet_session(hooks=[RunsStepFn()]) as sess:
        sess.run(counter.step)


def test_a_fresh_checkpoint_dir_is_reported_at_warning_with_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    with (
        caplog.at_level(logging.INFO, logger="trainhooks"),
        quiet_session(state={}, checkpoint_dir="runs/mnsit"),  # a typo of runs/mnist
    ):
        pass

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "no checkpoint found in" in r.getMessage()
        and str(tmp_path / "runs" / "mnsit") in r.getMessage()
        for r in warnings
    ), [r.getMessage() for r in caplog.records]
