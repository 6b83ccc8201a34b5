"""Mistakes a user's type checker must catch; each line ends with the mypy error code
expected there (``test_user_typing.py`` checks exactly these are reported). Never run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trainhooks as th


class TypoHook(th.SessionRunHook):
    def end(self, session: th.HookSession) -> None:
        print(session.global_stp)  # error: attr-defined


def mistakes(directory: Path, frozen_state: Mapping[str, Any]) -> None:
    th.Saver(max_to_keep="five")  # error: arg-type
    th.CheckpointSaverHook(directory, save_steps=1.5)  # error: arg-type
    th.StopAtStepHook(last_step="10")  # error: arg-type
    th.MonitoredTrainingSession(state=frozen_state)  # error: arg-type
    th.MonitoredSesion()  # error: attr-defined
    print(th.latest_checkpoint(directory).step)  # error: union-attr
