"""Hooks and listeners with ``state_dict()`` carry their state across restarts.

Each checkpoint holds, beside the user's entries, one reserved entry ``__trainhooks__``
with ``{"hooks": {name: state}}`` (a saver hook's own state being its listeners'); the
session restores them at creation. Old checkpoints without it restore; a user state
using the reserved name is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trainhooks as th
from _support.session import Counter, quiet_session


class Crash(Exception):
    """Stands for the process dying: the session exits without ``end``."""


class Tally(th.SessionRunHook):
    """A user-written hook with memory: how many steps it saw, over all sessions."""

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.name = name
        self.seen = 0

    def after_run(self, run_context: Any, run_values: Any) -> None:
        self.seen += 1

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = state["seen"]


class Remember(th.CheckpointSaverListener):
    """A listener with memory: the steps of every save it saw."""

    def __init__(self) -> None:
        self.saves: list[int] = []

    def after_save(self, session: Any, global_step_value: int) -> None:
        self.saves.append(global_step_value)

    def state_dict(self) -> dict[str, Any]:
        return {"saves": list(self.saves)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.saves = list(state["saves"])


def train(
    directory: Path,
    hooks: list[Any],
    listeners: list[Any],
    *,
    crash_at: int | None = None,
    last_step: int = 10,
    counter: Counter | None = None,
    async_save: bool = False,
) -> Counter:
    """Train a counter saving every 2 steps; ``crash_at`` raises after that step.

    ``hooks`` run before the saver hook, so a checkpoint holds their state after the step
    it saves (see ``test_a_hook_after_the_saver_is_saved_before_its_after_run``).
    """
    counter = counter or Counter()
    saver = th.CheckpointSaverHook(
        directory, save_steps=2, listeners=listeners, async_save=async_save
    )
    with quiet_session(
        state=counter.state,
        checkpoint_dir=directory,
        chief_only_hooks=[*hooks, saver],
        hooks=[th.StopAtStepHook(last_step=last_step)],
    ) as sess:
        while not sess.should_stop():
            sess.run(counter.step)
            if sess.global_step == crash_at:
                raise Crash
    return counter


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_hook_and_listener_states_resume_where_the_checkpoint_left_them(
    tmp_path: Path, async_save: bool
) -> None:
    with pytest.raises(Crash):  # last checkpoint: step 4
        train(tmp_path, [Tally()], [Remember()], crash_at=5, async_save=async_save)

    tally, remember = Tally(), Remember()
    train(tmp_path, [tally], [remember], async_save=async_save)

    assert tally.seen == 4 + 6  # the 4 steps before the checkpoint, then 5..10
    assert remember.saves == [0, 2, 4, 6, 8, 10]  # 4 saved before its after_save, replayed


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_the_checkpoint_holds_the_states_under_the_reserved_entry(
    tmp_path: Path, async_save: bool
) -> None:
    hooks = [Tally(), Tally(), Tally(name="mine")]
    train(tmp_path, hooks, [Remember()], last_step=2, async_save=async_save)

    saved = th.load(th.latest_checkpoint(tmp_path).path)
    assert set(saved) == {"w", "__trainhooks__"}
    hooks = saved["__trainhooks__"]["hooks"]
    assert hooks == {
        "CheckpointSaverHook": {"listeners": {"Remember": {"saves": [0]}}},  # before after_save(2)
        "Tally": {"seen": 2},
        "Tally-2": {"seen": 2},
        "mine": {"seen": 2},
    }


def test_a_checkpoint_without_hook_states_restores_and_hooks_start_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with th.Saver() as saver:  # an older checkpoint: the user's state only
        saver.save({"w": np.full(4, 6, dtype=np.float32)}, tmp_path, 6)
    tally = Tally()
    with caplog.at_level(logging.INFO, logger="trainhooks"):
        counter = train(tmp_path, [tally], [])
    assert counter.value == 10 and tally.seen == 4


def test_a_session_checkpoint_restores_into_a_plain_state(tmp_path: Path) -> None:
    train(tmp_path, [Tally()], [Remember()], last_step=4)

    state = {"w": np.zeros(4, dtype=np.float32)}
    with th.Saver() as saver:
        info = saver.restore(state, tmp_path)  # strict, and no "__trainhooks__" entry
    assert info.step == 4 and state["w"][0] == 4


def test_a_renamed_hook_starts_afresh_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train(tmp_path, [Tally(name="old")], [], last_step=2)

    renamed = Tally(name="new")
    with caplog.at_level(logging.INFO, logger="trainhooks"):
        train(tmp_path, [renamed], [], last_step=4)
    assert renamed.seen == 2  # started afresh
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("['new']" in m and "['old']" in m and "name=" in m for m in warnings), warnings


def test_a_hook_after_the_saver_is_saved_before_its_after_run(tmp_path: Path) -> None:
    # Hooks run in list order: the saver writes in its after_run, before the after_run of
    # a hook placed after it, whose state then lacks the saved step (docs: put stateful
    # hooks before the saver hook).
    after = Tally()
    saver = th.CheckpointSaverHook(tmp_path, save_steps=2)
    counter = Counter()
    with quiet_session(
        state=counter.state,
        checkpoint_dir=tmp_path,
        chief_only_hooks=[saver],
        hooks=[after, th.StopAtStepHook(last_step=2)],
    ) as sess:
        while not sess.should_stop():
            sess.run(counter.step)

    assert after.seen == 2
    saved = th.load(th.latest_checkpoint(tmp_path).path)["__trainhooks__"]["hooks"]
    assert saved["Tally"] == {"seen": 1}


def test_a_state_using_the_reserved_name_is_refused() -> None:
    with pytest.raises(ValueError, match="reserves for the hooks"):
        th.MonitoredSession(state={"__trainhooks__": 1})
