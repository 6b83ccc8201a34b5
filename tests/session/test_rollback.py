"""The session's side of a rollback: a hook raises ``RollbackRequested`` from ``after_run``;
the session restores the named checkpoint, re-creates itself and skips the named steps."""

from __future__ import annotations

import pytest

import trainhooks as th
from _support.session import (
    Counter,
    RecordingHook,
    RollBackAt,
    quiet_session,
    roll_back_to_a_save_in_flight,
)


def test_the_named_checkpoint_is_restored_the_step_skipped_and_hooks_see_a_restore(tmp_path):
    counter, trace = Counter(), []
    saver = th.CheckpointSaverHook(tmp_path, save_steps=2)
    hooks = [RollBackAt(bad_step=5, to_step=2), RecordingHook("h", trace)]
    with quiet_session(
        checkpoint_dir=tmp_path, state=counter.state, chief_only_hooks=[saver], hooks=hooks
    ) as sess:
        for _ in range(4):
            sess.run(counter.step)
        trace.clear()
        result = sess.run(counter.step)  # step 5: undone
        assert result == {"loss": 5.0}  # run returns the undone step's result
        assert sess.global_step == 2 and counter.value == 2
        assert sess.skipped_steps == {5}
        assert sess.restored_checkpoint.step == 2
        # the hook after the one that raised never saw step 5; everyone saw a re-creation
        assert trace == ["h.before_run(4)", "h.after_create_session(2)"]
        trace.clear()
        sess.run(counter.step)  # step 3
        sess.run(counter.step)  # step 4
        runs = counter.runs
        assert sess.run(counter.step) is None  # step 5 is skipped: no step, no hook
        assert counter.runs == runs and sess.global_step == 5 and counter.value == 4
        assert sess.restored_checkpoint is None
        sess.run(counter.step)  # step 6
        assert counter.value == 5
    assert trace == [
        "h.before_run(2)",
        "h.after_run(3)",
        "h.before_run(3)",
        "h.after_run(4)",
        "h.before_run(5)",
        "h.after_run(6)",
        "h.end(6)",
    ]


def test_a_rollback_without_a_checkpoint_dir_is_an_error_naming_the_fix():
    counter = Counter()
    with (
        pytest.raises(RuntimeError, match="no checkpoint_dir"),
        th.MonitoredSession(state=counter.state, hooks=[RollBackAt(1, 0)]) as sess,
    ):
        sess.run(counter.step)


def test_a_rollback_to_a_missing_checkpoint_raises_not_found(tmp_path):
    counter = Counter()
    with (
        pytest.raises(th.CheckpointNotFoundError),
        quiet_session(checkpoint_dir=tmp_path, state=counter.state, hooks=[RollBackAt(1, 7)]) as s,
    ):
        s.run(counter.step)


def test_a_rollback_to_a_step_whose_async_save_is_in_flight_waits_for_it(tmp_path):
    """The saver hook's save of step 4 is still being written when step 5 asks to go back
    to step 4: the restore waits for that save instead of finding no checkpoint."""
    roll_back_to_a_save_in_flight(tmp_path, "before_rename")
