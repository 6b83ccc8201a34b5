"""The writer of a checkpoint directory: its lock, its retention and its deletions.

Only one process at a time may change a directory of checkpoints, or the retention of one
writer would delete the checkpoints of the other. :class:`DirectoryWriter` is that one
writer; within a process savers share it (``_sharing.py``). Opening it takes the
directory's lock, removes what a crashed writer left half-done and recovers the retention
record from the newest checkpoint; each :meth:`DirectoryWriter.commit` plans retention
*before* writing (the plan is stored in the new manifest), commits, and deletes the
victims only once the new checkpoint is durable. ``prune_checkpoints`` takes the same
lock and deletes the same way.

Deleting is crash-safe: a victim is first renamed to a ``.deleting-<uuid>`` name (readers
ignore it at once), the parent is fsynced, and only then are its files removed, so a crash
mid-delete never leaves a half-deleted directory that looks like a checkpoint. Only names
this library makes are ever removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainhooks._exceptions import CheckpointError, CheckpointWriteError
from trainhooks._store._commit import TensorSource, commit_checkpoint
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
from trainhooks._store._listing import list_checkpoints
from trainhooks._store._reader import CheckpointReader
from trainhooks._store._remote._url import as_url, local_path

__all__ = [
    "DirectoryWriter",
    "RetentionPolicy",
    "RetentionRecord",
    "all_but_newest",
    "plan_retention",
    "prune_checkpoints",
    "recover_record",
    "retention_policy",
]


# -- retention --------------------------------------------------------------------------
@dataclass(frozen=True)
class RetentionPolicy:
    """TF's ``max_to_keep`` (None keeps all) and ``keep_checkpoint_every_n_hours`` (as
    ``keep_every`` seconds, counted from ``first_keep_time``, the saver's creation)."""

    max_to_keep: int | None
    keep_every: float
    first_keep_time: float


def retention_policy(
    max_to_keep: int | None, keep_checkpoint_every_n_hours: float
) -> RetentionPolicy:
    """The policy of TF's ``Saver`` arguments (``max_to_keep`` None or 0 keeps all), counted
    from now, refusing values TF would not accept."""
    if max_to_keep is not None and max_to_keep < 0:
        raise ValueError(f"max_to_keep must be None or >= 0, got {max_to_keep}")
    if keep_checkpoint_every_n_hours <= 0:
        raise ValueError("keep_checkpoint_every_n_hours must be positive")
    keep_every = keep_checkpoint_every_n_hours * 3600.0
    # TF counts the first keep from the saver's creation.
    return RetentionPolicy(max_to_keep or None, keep_every, time.time() + keep_every)


@dataclass(frozen=True)
class RetentionRecord:
    """The retention state a save leaves behind, stored in that checkpoint's manifest.

    ``managed`` are the ``(step, time)`` checkpoints retention may still delete, oldest
    first; ``delete`` the victims chosen at that save (removed right after its commit, or by
    the next writer if a crash came first); ``next_keep_time`` when the next checkpoint
    leaving the window is kept for good. Reading it back from the newest checkpoint makes
    retention survive crashes and restarts without a separate state file. ``sequence`` is
    the number of the commit the record was planned for: the directory's commits count up
    from 1, whatever their steps (it is stored as the manifest's ``sequence``, and a new
    writer continues from the highest one it finds).
    """

    managed: tuple[tuple[int, float], ...] = ()
    delete: tuple[int, ...] = ()
    next_keep_time: float = math.inf
    sequence: int = 0

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
    record: RetentionRecord, step: int, when: float, policy: RetentionPolicy
) -> RetentionRecord:
    """TF's policy: keep the newest ``max_to_keep``; of those leaving the window, keep one
    for good every ``keep_every`` seconds; the rest become ``delete`` victims.

    "Newest" means committed last. A commit at a step below managed ones means the run was
    rolled back: the checkpoints past its step belong to the abandoned branch and become
    the oldest, the first to leave the window.
    """
    sequence = record.sequence + 1
    if policy.max_to_keep is None:
        return RetentionRecord((), (), record.next_keep_time, sequence)
    others = [item for item in record.managed if item[0] != step]
    abandoned = [item for item in others if item[0] > step]
    managed = abandoned + [item for item in others if item[0] < step] + [(step, when)]
    delete = [victim for victim in record.delete if victim != step]  # retried until done
    next_keep = record.next_keep_time
    while len(managed) > policy.max_to_keep:
        victim_step, victim_time = managed.pop(0)
        if victim_time >= next_keep:
            next_keep = victim_time + policy.keep_every  # kept for good: no longer managed
        else:
            delete.append(victim_step)
    return RetentionRecord(tuple(managed), tuple(delete), next_keep, sequence)


def recover_record(
    existing: Sequence[CheckpointInfo],
    retention_of: Callable[[CheckpointInfo], Any],
    policy: RetentionPolicy,
) -> RetentionRecord:
    """Continue the retention of the run that made the newest commit among ``existing``
    (the valid checkpoints of one directory or object-storage prefix; ``retention_of``
    reads one's recorded retention).

    Its manifest says which checkpoints are still managed and which were chosen for
    deletion (a crash may have come before they were removed); the commit numbering goes
    on from the highest one. Without a record (no checkpoint yet, or one written by
    another tool), behave like TF's ``recover_last_checkpoints``: manage the newest
    window, leave older ones alone.
    """
    existing = sorted(existing, key=_commit_order)
    if not existing:
        return RetentionRecord(next_keep_time=policy.first_keep_time)
    newest = existing[-1]
    sequence = max(c.sequence for c in existing)
    raw = retention_of(newest)
    record = RetentionRecord.from_json(raw) if raw is not None else None
    if record is None:
        window = existing[-policy.max_to_keep :] if policy.max_to_keep else []
        managed = tuple((c.step, c.time) for c in window)
        return RetentionRecord(managed, (), policy.first_keep_time, sequence)
    # Victims a crash kept from being removed are deleted after the next commit: each was
    # chosen at or before the newest commit, so only a checkpoint committed since (none,
    # or the newest itself, re-saved at a victim's step) must be spared.
    on_disk = {c.step: c for c in existing}
    pending = tuple(
        step
        for step in record.delete
        if step not in on_disk or _commit_order(on_disk[step]) < _commit_order(newest)
    )
    return RetentionRecord(record.managed, pending, record.next_keep_time, sequence)


def _recover_record(directory: Path, basename: str, policy: RetentionPolicy) -> RetentionRecord:
    """:func:`recover_record` of the checkpoints in ``directory``."""

    def retention_of(info: CheckpointInfo) -> Any:
        with CheckpointReader(info.path, follow_symlinks=False) as reader:
            return reader.manifest.retention

    return recover_record(list_checkpoints(directory, basename=basename), retention_of, policy)


def _commit_order(info: CheckpointInfo) -> tuple[int, int]:
    return info.commit_order


# -- the writer -------------------------------------------------------------------------
class DirectoryWriter:
    """The one writer of a directory of checkpoints, holding its lock until :meth:`close`.

    Create it with :meth:`open`. A writer whose directory was removed or replaced refuses
    the next commit and closes itself; its owner opens a new one for the save after.
    """

    def __init__(self, directory: Path, basename: str, policy: RetentionPolicy) -> None:
        self.directory = directory
        self.basename = basename
        self.policy = policy
        self._closed = False
        self.leases = 0  # savers of this process sharing this writer (``_sharing.py``)
        self._commit_lock = threading.Lock()  # sharers may save from different threads
        self.lock = DirectoryLock(directory)
        self.lock.acquire()
        try:
            stat = os.stat(directory)
            self.identity = (stat.st_dev, stat.st_ino)
            self._inode = stat.st_ino
            clean_leftovers(directory, basename)
            self.record = _recover_record(directory, basename, policy)
        except BaseException as exc:
            self.lock.release()
            if isinstance(exc, OSError):
                raise CheckpointWriteError(
                    f"cannot prepare {directory} for writing: {exc.strerror} ({exc.filename})",
                    path=directory,
                    errno=exc.errno,
                ) from exc
            raise

    @classmethod
    def open(
        cls, directory: Path, basename: str, policy: RetentionPolicy, step: int | None
    ) -> DirectoryWriter:
        """Create ``directory`` if needed and become its writer (``step`` is the save this
        is for, if any, named in the error if the directory cannot be created)."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointWriteError(
                f"cannot create checkpoint directory {directory}: {exc.strerror}",
                path=directory,
                step=step,
                errno=exc.errno,
            ) from exc
        return cls(directory, basename, policy)

    def commit(
        self,
        step: int,
        tensors: Sequence[TensorSource],
        tree: Any,
        metadata: dict[str, Any],
        *,
        cancel: threading.Event | None = None,
    ) -> CheckpointInfo:
        """Durably commit a checkpoint at ``step`` carrying the retention plan, then delete
        the plan's victims. Returns only once the checkpoint survives a crash. Setting
        ``cancel`` stops the save before its commit point (see ``commit_checkpoint``)."""

        def write(plan: RetentionRecord, when: float) -> CheckpointInfo:
            return commit_checkpoint(
                self.directory,
                self.basename,
                step,
                tensors,
                tree,
                metadata,
                when=when,
                retention=plan.to_json(),
                sequence=plan.sequence,
                cancel=cancel,
            )

        return self.commit_with(step, write)

    def commit_with(
        self, step: int, write: Callable[[RetentionRecord, float], CheckpointInfo]
    ) -> CheckpointInfo:
        """Plan retention for a commit at ``step``, let ``write(plan, when)`` commit a
        checkpoint carrying that plan (a single-process save, or a sharded one whose shards
        other processes wrote), then delete the plan's victims once it is durable."""
        with self._commit_lock:
            self._check_in_place(step)
            when = time.time()
            plan = plan_retention(self.record, step, when, self.policy)
            try:
                info = write(plan, when)
            except CheckpointWriteError as exc:
                if exc.committed:  # on disk and in retention's care, though not yet durable
                    self.record = plan
                raise
            # the number the manifest carries (a sharded writer may number it itself)
            self.record = dataclasses.replace(plan, sequence=info.sequence)
            self._delete_victims()  # only now that the new checkpoint is durable
            return info

    @property
    def closed(self) -> bool:
        """Closed, or inherited by a ``fork()``ed child, where the lock is the parent's."""
        return self._closed or not self.lock.held

    def close(self) -> None:
        """Release the directory's lock; safe to call twice."""
        self._closed = True
        self.lock.release()

    def _check_in_place(self, step: int) -> None:
        try:
            in_place = os.stat(self.directory).st_ino == self._inode
        except FileNotFoundError:
            in_place = False
        if not in_place:
            self.close()
            raise CheckpointWriteError(
                f"{self.directory} was removed or replaced while a saver was writing it; the "
                f"save of step {step} did not happen (the next save re-creates the directory)",
                path=self.directory,
                step=step,
            )

    def _delete_victims(self) -> None:
        for step in self.record.delete:
            try:
                remove_step(self.directory, step, self.basename)
            except OSError as exc:
                raise CheckpointWriteError(
                    f"retention could not delete the checkpoint of step {step} in "
                    f"{self.directory}: {exc.strerror}; the new checkpoint is committed and "
                    "the next save retries the deletion",
                    path=self.directory,
                    step=step,
                    errno=exc.errno,
                ) from exc
        self.record = dataclasses.replace(self.record, delete=())


# -- deleting -----------------------------------------------------------------------------
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
    """Delete all but the ``keep`` newest (last committed) valid checkpoints; return what was
    (or would be) removed, in step order.

    Takes the directory's writer lock, so it fails with ``CheckpointLockedError`` while a
    training run is saving there. Corrupt checkpoints are left alone for inspection.
    """
    if keep < 1:
        raise ValueError(
            f"keep must be at least 1 (the newest valid checkpoint is never deleted), got {keep}"
        )
    if (url := as_url(directory)) is not None:
        from trainhooks._store._remote import _api

        return _api.prune_checkpoints(url, keep, dry_run, basename)
    directory = local_path(directory)
    if dry_run:
        return _prune_victims(directory, keep, basename)
    lock = DirectoryLock(directory)
    lock.acquire()
    try:
        victims = _prune_victims(directory, keep, basename)
        for info in victims:
            if parse_committed(info.path.name, basename) is None:
                raise CheckpointError(
                    f"refusing to delete {info.path}: not a name trainhooks made", path=info.path
                )
            remove_step(directory, info.step, basename)
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


def _prune_victims(directory: Path, keep: int, basename: str) -> list[CheckpointInfo]:
    return all_but_newest(list_checkpoints(directory, basename=basename), keep)


def all_but_newest(listed: Sequence[CheckpointInfo], keep: int) -> list[CheckpointInfo]:
    """All but the ``keep`` newest commits of ``listed`` (after a rollback not the highest
    steps), in step order: what ``prune_checkpoints`` removes, locally and on a bucket."""
    keeping = {info.path for info in sorted(listed, key=_commit_order)[-keep:]}
    return sorted((info for info in listed if info.path not in keeping), key=lambda i: i.step)
