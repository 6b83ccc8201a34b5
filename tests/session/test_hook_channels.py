"""The public channels between the session and hooks: ``release()``, ``HookSession``'s
``restored_checkpoint`` and ``request_stop()``. A user-written hook does through them
everything the built-in hooks do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trainhooks as th


def _step() -> dict[str, float]:
    return {"loss": 1.0}


class Releasing(th.SessionRunHook):
    """Records its lifecycle; optionally raises from one method."""

    def __init__(self, log: list[str], name: str, fail_in: str | None = None) -> None:
        self.log, self.name, self.fail_in = log, name, fail_in

    def _event(self, event: str) -> None:
        self.log.append(f"{self.name}.{event}")
        if event == self.fail_in:
            raise RuntimeError(f"{self.name} fails in {event}")

    def begin(self) -> None:
        self._event("begin")

    def end(self, session: th.HookSession) -> None:
        self._event("end")

    def release(self) -> None:
        self._event("release")


class DuckTypedReleasing:
    """A hook that does not subclass ``SessionRunHook`` (TF allows duck typing)."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def release(self) -> None:
        self.log.append("duck.release")


def test_release_runs_once_after_end_on_a_normal_close() -> None:
    log: list[str] = []
    with th.MonitoredSession(hooks=[Releasing(log, "a"), DuckTypedReleasing(log)]) as session:
        session.run(_step)
    session.close()  # a second close is a no-op
    assert log == ["a.begin", "a.end", "a.release", "duck.release"]


def test_release_runs_when_a_step_raises_although_end_does_not() -> None:
    log: list[str] = []

    def failing_step() -> None:
        raise ValueError("bad batch")

    session = th.MonitoredSession(hooks=[Releasing(log, "a")])
    with pytest.raises(ValueError, match="bad batch"), session:
        session.run(failing_step)
    assert log == ["a.begin", "a.release"]


def test_release_runs_for_every_hook_when_a_begin_fails() -> None:
    log: list[str] = []
    hooks = [Releasing(log, "a"), Releasing(log, "b", fail_in="begin")]
    with pytest.raises(RuntimeError, match="b fails in begin"):
        th.MonitoredSession(hooks=hooks)
    assert log == ["a.begin", "b.begin", "a.release", "b.release"]


def test_every_hook_is_released_and_the_first_release_error_propagates() -> None:
    log: list[str] = []
    hooks = [
        Releasing(log, "a", fail_in="release"),
        Releasing(log, "b", fail_in="release"),
        Releasing(log, "c"),
    ]
    session = th.MonitoredSession(hooks=hooks)
    with pytest.raises(RuntimeError, match="a fails in release"):
        session.close()
    assert log[-3:] == ["a.release", "b.release", "c.release"]


class SeesRestore(th.SessionRunHook):
    def __init__(self) -> None:
        self.at_creation: list[th.CheckpointInfo | None] = []
        self.after_a_step: list[th.CheckpointInfo | None] = []

    def after_create_session(self, session: th.HookSession, coord: Any) -> None:
        self.at_creation.append(session.restored_checkpoint)

    def after_run(self, run_context: th.SessionRunContext, run_values: th.SessionRunValues) -> None:
        self.after_a_step.append(run_context.session.restored_checkpoint)


def test_restored_checkpoint_is_the_restored_one_until_a_step_runs(tmp_path: Path) -> None:
    with th.Saver() as saver:
        saved = saver.save({"w": np.arange(3.0)}, tmp_path, 7)
    hook = SeesRestore()
    state = {"w": np.zeros(3)}
    with th.MonitoredSession(hooks=[hook], state=state, checkpoint_dir=tmp_path) as session:
        assert session.restored_checkpoint == saved
        session.run(_step)
        assert session.restored_checkpoint is None
    assert hook.at_creation == [saved] and hook.after_a_step == [None]
    assert np.array_equal(state["w"], np.arange(3.0))


def test_restored_checkpoint_is_none_without_a_checkpoint(tmp_path: Path) -> None:
    hook = SeesRestore()
    with th.MonitoredSession(hooks=[hook], checkpoint_dir=tmp_path) as session:
        assert session.restored_checkpoint is None
    assert hook.at_creation == [None]


class StopsFromTheSession(th.SessionRunHook):
    def after_run(self, run_context: th.SessionRunContext, run_values: th.SessionRunValues) -> None:
        if run_context.session.global_step >= 2:
            run_context.session.request_stop()


def test_a_hook_can_stop_the_session_through_hook_session_request_stop() -> None:
    with th.MonitoredSession(hooks=[StopsFromTheSession()]) as session:
        steps = 0
        while not session.should_stop():
            session.run(_step)
            steps += 1
    assert steps == 2


def test_checkpoint_saver_hook_max_to_keep_sets_the_retention_of_its_own_saver(
    tmp_path: Path,
) -> None:
    hook = th.CheckpointSaverHook(tmp_path, save_steps=1, max_to_keep=2)
    with th.MonitoredSession(hooks=[hook, th.StopAtStepHook(last_step=5)]) as session:
        while not session.should_stop():
            session.run(_step)
    assert [info.step for info in th.list_checkpoints(tmp_path)] == [4, 5]


def test_checkpoint_saver_hook_refuses_max_to_keep_for_a_saver_it_does_not_own(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match=r"saver=Saver\(max_to_keep=\.\.\.\)"):
        th.CheckpointSaverHook(tmp_path, save_steps=1, saver=th.Saver(), max_to_keep=2)


def test_feed_fn_hook_is_tf_s_name_for_the_step_arguments_hook() -> None:
    assert th.FeedFnHook is th.StepArgsHook
    seen: list[int] = []

    def step(batch: int) -> None:
        seen.append(batch)

    with th.MonitoredSession(hooks=[th.FeedFnHook(lambda: {"batch": 3})]) as session:
        session.run(step)
    assert seen == [3]
