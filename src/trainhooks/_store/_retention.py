"""Deleting checkpoints safely: retention after a commit, pruning by hand, leftover cleanup.

A victim is first renamed to a ``.deleting-<uuid>`` name (readers ignore it at once), the
parent is fsynced, and only then are its files removed, so a crash mid-delete never leaves
a half-deleted directory that looks like a checkpoint. Only names this library makes are
ever removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from trainhooks._exceptions import CheckpointError
from trainhooks._store._durable import DirectoryLock, fsync_directory
from trainhooks._store._faults import fault_point
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import (
    DEFAULT_BASENAME,
    deleting_name,
    leftover_step,
    parse_committed,
)
from trainhooks._store._reader import list_checkpoints

__all__ = ["clean_leftovers", "prune_checkpoints", "remove_checkpoint"]


def remove_checkpoint(info: CheckpointInfo, basename: str = DEFAULT_BASENAME) -> None:
    """Crash-safely delete one committed checkpoint (rename aside, fsync, remove)."""
    if parse_committed(info.path.name, basename) is None:
        raise CheckpointError(
            f"refusing to delete {info.path}: not a name trainhooks made", path=info.path
        )
    aside = info.path.parent / deleting_name(basename, info.step)
    os.rename(info.path, aside)
    fault_point("retention_after_mark")
    fsync_directory(info.path.parent)
    fault_point("retention_before_remove")
    shutil.rmtree(aside)


def clean_leftovers(directory: Path, basename: str = DEFAULT_BASENAME) -> list[str]:
    """Remove staging and deletion entries left by a crash; call only while holding the lock."""
    removed = []
    for name in os.listdir(directory):
        path = directory / name
        if leftover_step(name, basename) is None or path.is_symlink() or not path.is_dir():
            continue
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(path)
        removed.append(name)
    return removed


def prune_checkpoints(
    directory: str | os.PathLike[str],
    keep: int,
    *,
    dry_run: bool = False,
    basename: str = DEFAULT_BASENAME,
) -> list[CheckpointInfo]:
    """Delete all but the newest ``keep`` valid checkpoints; return what was (or would be) removed.

    Takes the directory's writer lock, so it fails with ``CheckpointLockedError`` while a
    training run is saving there. Corrupt checkpoints are left alone for inspection.
    """
    if keep < 1:
        raise ValueError(
            f"keep must be at least 1 (the newest valid checkpoint is never deleted), got {keep}"
        )
    directory = Path(directory)
    if dry_run:
        return list_checkpoints(directory, basename=basename)[:-keep]
    lock = DirectoryLock(directory)
    lock.acquire()
    try:
        victims = list_checkpoints(directory, basename=basename)[:-keep]
        for info in victims:
            remove_checkpoint(info, basename)
        clean_leftovers(directory, basename)
    finally:
        lock.release()
    return victims
