"""Deleting checkpoints safely: retention after a commit, pruning by hand, leftover cleanup.

A victim is first renamed to a ``.deleting-<uuid>`` name (readers ignore it at once), the
parent is fsynced, and only then are its files removed, so a crash mid-delete never leaves
a half-deleted directory that looks like a checkpoint. Only names this library makes are
ever removed.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainhooks._exceptions import CheckpointError, CheckpointWriteError
from trainhooks._store._durable import DirectoryLock, fsync_directory
from trainhooks._store._faults import fault_point
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import (
    DEFAULT_BASENAME,
    committed_path,
    deleting_name,
    leftover_step,
    parse_committed,
)
from trainhooks._store._reader import list_checkpoints

__all__ = [
    "RetentionRecord",
    "clean_leftovers",
    "plan_retention",
    "prune_checkpoints",
    "remove_checkpoint",
]


@dataclass(frozen=True)
class RetentionRecord:
    """The retention state a save leaves behind, stored in that checkpoint's manifest.

    ``managed`` are the ``(step, time)`` checkpoints retention may still delete, oldest
    first; ``delete`` the victims chosen at that save (removed right after its commit, or by
    the next writer if a crash came first); ``next_keep_time`` when the next checkpoint
    leaving the window is kept for good. Reading it back from the newest checkpoint makes
    retention survive crashes and restarts without a separate state file.
    """

    managed: tuple[tuple[int, float], ...] = ()
    delete: tuple[int, ...] = ()
    next_keep_time: float = math.inf

    def to_json(self) -> dict[str, Any]:
        return {
            "managed": [list(item) for item in self.managed],
            "delete": list(self.delete),
            "next_keep_time": self.next_keep_time if math.isfinite(self.next_keep_time) else None,
        }

    @classmethod
    def from_json(cls, raw: Any) -> RetentionRecord | None:
        """The record in a manifest, or None when absent or not of this shape."""
        try:
            managed = tuple((int(step), float(when)) for step, when in raw["managed"])
            delete = tuple(int(step) for step in raw["delete"])
            keep = raw["next_keep_time"]
            return cls(managed, delete, math.inf if keep is None else float(keep))
        except (KeyError, TypeError, ValueError):
            return None


def plan_retention(
    record: RetentionRecord, step: int, when: float, max_to_keep: int | None, keep_every: float
) -> RetentionRecord:
    """TF's policy: keep the newest ``max_to_keep``; of those leaving the window, keep one
    for good every ``keep_every`` seconds; the rest become ``delete`` victims."""
    if max_to_keep is None:
        return RetentionRecord((), (), record.next_keep_time)
    managed = [item for item in record.managed if item[0] != step] + [(step, when)]
    delete = [victim for victim in record.delete if victim != step]  # retried until done
    next_keep = record.next_keep_time
    while len(managed) > max_to_keep:
        victim_step, victim_time = managed.pop(0)
        if victim_time >= next_keep:
            next_keep = victim_time + keep_every  # kept for good: no longer managed
        else:
            delete.append(victim_step)
    return RetentionRecord(tuple(managed), tuple(delete), next_keep)


def remove_step(directory: Path, step: int, basename: str = DEFAULT_BASENAME) -> bool:
    """Crash-safely delete the committed checkpoint of ``step`` (rename aside, fsync,
    remove); False when it is already gone."""
    path = committed_path(directory, basename, step)
    aside = directory / deleting_name(basename, step)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    fault_point("retention_after_mark")
    fsync_directory(directory)
    fault_point("retention_before_remove")
    shutil.rmtree(aside)
    return True


def remove_checkpoint(info: CheckpointInfo, basename: str = DEFAULT_BASENAME) -> None:
    """Crash-safely delete one committed checkpoint."""
    if parse_committed(info.path.name, basename) is None:
        raise CheckpointError(
            f"refusing to delete {info.path}: not a name trainhooks made", path=info.path
        )
    remove_step(info.path.parent, info.step, basename)


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
    except OSError as exc:
        raise CheckpointWriteError(
            f"pruning {directory} failed: {exc.strerror or exc} ({exc.filename}); every "
            "checkpoint not yet removed is intact",
            path=directory,
            errno=exc.errno,
        ) from exc
    finally:
        lock.release()
    return victims
