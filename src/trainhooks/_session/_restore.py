"""Restoring a session's state at creation: from one process's view or from every rank's.

Kept apart from ``_core.py`` (the per-step machinery): a single-process session restores
through ``Saver`` (the newest valid checkpoint, older ones on corruption); under
``torch.distributed`` the ranks agree on the checkpoint (``_collective.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from trainhooks._exceptions import CheckpointNotFoundError, RollbackRequested
from trainhooks._store._remote._url import ObjectPath

if TYPE_CHECKING:
    from trainhooks._session._core import MonitoredSession
    from trainhooks._store._info import CheckpointInfo

__all__ = [
    "check_rollback",
    "log_recovery",
    "log_rollback",
    "restore_latest",
]

_LOG = logging.getLogger("trainhooks")


def restore_latest(
    session: MonitoredSession, directory: Path | ObjectPath, step: int | None
) -> CheckpointInfo | None:
    """Restore ``session.checkpoint_state`` from ``directory`` (its newest valid checkpoint,
    or ``step``'s); None, with a warning, when there is none and no ``step`` was asked."""
    sync = session.distributed
    if sync is not None:
        info = sync.restore(session, directory, step)
    else:
        info = _restore_one_process(session, directory, step)
    if info is None:
        # WARNING, not INFO: a mistyped checkpoint_dir looks exactly like a new run
        _LOG.warning(
            "no checkpoint found in %s; starting at step %d (expected for a new run; "
            "to resume, check checkpoint_dir)",
            directory if isinstance(directory, ObjectPath) else directory.absolute(),
            session.global_step,
        )
    return info


def _restore_one_process(
    session: MonitoredSession, directory: Path | ObjectPath, step: int | None
) -> CheckpointInfo | None:
    from trainhooks._saver import Saver  # lazy: keeps importing the session cheap

    try:
        with Saver(max_to_keep=None) as saver:
            return saver.restore(session.checkpoint_state, directory, step)
    except CheckpointNotFoundError:
        if step is not None:
            raise
        return None


def check_rollback(session: MonitoredSession, request: RollbackRequested) -> None:
    """Refuse a rollback the session cannot do: it has no checkpoints."""
    if session.checkpoint_dir is None:
        raise RuntimeError(
            f"a hook asked to roll back step {session.global_step} ({request.reason}), but "
            "the session has no checkpoint_dir to restore from; pass checkpoint_dir="
        ) from request


def log_rollback(session: MonitoredSession, request: RollbackRequested) -> None:
    _LOG.warning(
        "rolling back step %d (%s): restoring the checkpoint at step %d from %s; "
        "runs skipped from now on: steps %s",
        session.global_step,
        request.reason,
        request.step,
        session.checkpoint_dir,
        sorted(session.skipped_steps),
    )


def log_recovery(session: MonitoredSession, exc: BaseException) -> None:
    _LOG.warning(
        "recoverable error at global step %d: %r; re-creating the session from the "
        "latest checkpoint in %s",
        session.global_step,
        exc,
        session.checkpoint_dir,
    )
