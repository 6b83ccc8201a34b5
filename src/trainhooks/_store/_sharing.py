"""The process's one writer per directory, shared by every saver saving into it.

A directory has one writer (``DirectoryWriter``: its lock and retention). Two savers of one
process saving into the same directory -- two ``CheckpointSaverHook``s of one session, as
TF allows -- must not lock each other out: in TF they share the graph's one saver. Here
each ``Saver`` holds a :class:`WriterLease` on the process's writer of that directory
(:func:`open_writer`), so their saves go through one lock and one retention window; the
lock is released when the last lease is closed. A saver asking for another retention
policy or basename is refused, since one window cannot follow two policies. Across
processes nothing changes: the directory's lock keeps a second process out.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from trainhooks._store._commit import TensorSource
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._writer import DirectoryWriter, RetentionPolicy, RetentionRecord

__all__ = ["WriterLease", "open_writer"]

# By the directory's (device, inode). Weak: a writer lives as long as a lease on it, so a
# saver dropped without close() still lets its lock go when it is collected.
_SHARED: weakref.WeakValueDictionary[tuple[int, int], DirectoryWriter] = (
    weakref.WeakValueDictionary()
)
_SHARED_LOCK = threading.Lock()


class WriterLease:
    """One saver's share of the process's writer of a directory (see :func:`open_writer`).

    ``closed`` once this lease is closed or the writer closed itself (its directory was
    removed or replaced): its owner then opens a new lease for the next save.
    """

    def __init__(self, writer: DirectoryWriter) -> None:
        self.writer = writer
        self._held = True

    @property
    def closed(self) -> bool:
        return not self._held or self.writer.closed

    def commit(
        self,
        step: int,
        tensors: Sequence[TensorSource],
        tree: Any,
        metadata: dict[str, Any],
        *,
        cancel: threading.Event | None = None,
    ) -> CheckpointInfo:
        """:meth:`DirectoryWriter.commit` on the shared writer (a background save passes
        its ``cancel`` event)."""
        return self.writer.commit(step, tensors, tree, metadata, cancel=cancel)

    def commit_with(
        self, step: int, write: Callable[[RetentionRecord, float], CheckpointInfo]
    ) -> CheckpointInfo:
        """:meth:`DirectoryWriter.commit_with` on the shared writer (a sharded save)."""
        return self.writer.commit_with(step, write)

    def close(self) -> None:
        """Give the share back; the last one closes the writer (its lock). Idempotent."""
        if not self._held:
            return
        self._held = False
        writer = self.writer
        with _SHARED_LOCK:
            writer.leases -= 1
            if writer.leases > 0:
                return
            if _SHARED.get(writer.identity) is writer:
                del _SHARED[writer.identity]
        writer.close()


def open_writer(
    directory: Path, basename: str, policy: RetentionPolicy, step: int | None
) -> WriterLease:
    """A lease on this process's writer of ``directory``, opening the writer (taking the
    lock) if no saver of this process holds it yet. ``step`` is the save this is for, if any.

    Raises ``CheckpointLockedError`` when another process holds the directory, and
    ``ValueError`` when this process's writer keeps another retention policy or basename.
    """
    with _SHARED_LOCK:
        if directory.is_dir():
            stat = os.stat(directory)
            writer = _SHARED.get((stat.st_dev, stat.st_ino))
            if writer is not None and not writer.closed:
                _check_same_settings(writer, basename, policy)
                writer.leases += 1
                return WriterLease(writer)
        writer = DirectoryWriter.open(directory, basename, policy, step)
        writer.leases = 1
        _SHARED[writer.identity] = writer
        return WriterLease(writer)


def _check_same_settings(writer: DirectoryWriter, basename: str, policy: RetentionPolicy) -> None:
    ours, theirs = writer.policy, policy
    if writer.basename == basename and (ours.max_to_keep, ours.keep_every) == (
        theirs.max_to_keep,
        theirs.keep_every,
    ):
        return

    def describe(name: str, p: RetentionPolicy) -> str:
        return (
            f"basename={name!r}, max_to_keep={p.max_to_keep}, "
            f"keep_checkpoint_every_n_hours={p.keep_every / 3600:g}"
        )

    raise ValueError(
        f"{writer.directory} already has a writer in this process (another Saver or "
        f"CheckpointSaverHook) with {describe(writer.basename, ours)}; this saver asks for "
        f"{describe(basename, theirs)}. Savers of one directory in one process share its "
        "writer and its retention (as TF's saver hooks share the graph's saver): give "
        "them the same settings, or save into another directory.",
    )
