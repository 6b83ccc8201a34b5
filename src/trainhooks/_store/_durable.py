"""Low-level durable file operations: complete writes, fsync of files and directories, the lock.

Every helper raises ``OSError`` untouched; the commit layer turns it into a typed error that
names the path and step. fsync is never retried: after EIO the kernel may have dropped the
dirty pages, so a retry that succeeds would prove nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import json
import os
import socket
import stat
import time
import uuid
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trainhooks._exceptions import (
    CheckpointLockedError,
    CheckpointNotFoundError,
    CheckpointWriteError,
)
from trainhooks._store._faults import fault_point

__all__ = [
    "BACKGROUND_CHUNK",
    "CHUNK",
    "DirectoryLock",
    "exchange_paths",
    "fsync_directory",
    "fsync_fd",
    "write_all",
    "write_file_atomically",
    "write_new_file",
]

LOCK_NAME = ".trainhooks.lock"
# Large enough to amortise the calls, small enough to stay cache-warm; also keeps each
# write below Linux's ~2 GiB per-call limit.
CHUNK = 8 * 1024 * 1024
# A background save writes in larger calls: between two calls its thread must take the
# GIL back from a training thread that may hold it for a whole switch interval (5 ms),
# so fewer calls finish sooner: beside a pure-Python step, writing 1 GiB took 3.5x as
# long as beside an idle one with 8 MiB calls, 2x with 64 MiB ones (docs/performance.md).
BACKGROUND_CHUNK = 64 * 1024 * 1024


def write_all(fd: int, data: memoryview, chunk: int = CHUNK) -> None:
    """Write every byte of ``data`` to ``fd`` in ``chunk``-sized calls, looping over short
    writes (every byte of a checkpoint or an export is written here)."""
    view = data.cast("B") if data.format != "B" or data.ndim != 1 else data
    written = 0
    total = len(view)
    while written < total:
        n = os.write(fd, view[written : written + chunk])
        if n <= 0:  # a zero-length write means the device refuses more data
            raise OSError(errno.ENOSPC, "write made no progress")
        written += n


def fsync_fd(fd: int) -> None:
    """fsync one open file; the ``fsync`` fault point can inject EIO here."""
    fault_point("fsync")
    os.fsync(fd)


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that the names created or renamed in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync_fd(fd)
    finally:
        os.close(fd)


def write_new_file(
    path: str | os.PathLike[str],
    parts: Iterable[memoryview],
    chunk: int = CHUNK,
    *,
    before_fsync: str | None = None,
) -> None:
    """Create ``path`` (it must not exist), write ``parts`` in order (in calls of at most
    ``chunk`` bytes), fsync and close it, every result checked. On failure the file is
    left for the caller to remove (it knows whether a staging directory goes with it).
    ``before_fsync`` names a fault point hit between the last write and the fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        for part in parts:
            write_all(fd, part, chunk)
        if before_fsync is not None:
            fault_point(before_fsync)
        fsync_fd(fd)
    finally:
        os.close(fd)


def write_file_atomically(path: str | os.PathLike[str], data: bytes | Iterable[memoryview]) -> None:
    """Replace ``path`` with ``data`` (bytes, or parts streamed in order) crash-safely: a
    temp file beside it, written, fsynced and closed, renamed over ``path``, then the
    directory fsynced. Readers see the old file or the new one, never a torn one; if
    anything fails (including the parts iterator) the temp file is removed."""
    target = Path(path)
    temp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    parts = [memoryview(data)] if isinstance(data, (bytes, bytearray)) else data
    try:
        write_new_file(temp, parts)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_directory(target.parent)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange_paths(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Atomically swap two existing paths (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False where the platform or filesystem cannot (the caller falls back to two
    renames); raises ``OSError`` for any other failure.
    """
    renameat2 = _libc_renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(a), None, os.fspath(b))


@functools.cache
def _libc_renameat2() -> Any:
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


class DirectoryLock:
    """An exclusive ``flock`` on ``DIR/.trainhooks.lock``, held for a writer's life.

    flock locks die with the process, so a crashed writer never leaves a stale lock; the
    file's content (pid, host, time) only serves the error message of a second writer.
    The file is opened without following a symlink and must be a plain file with one link,
    so nothing planted in its place is ever truncated or written. A child ``fork()``ed
    while the lock is held (a DataLoader worker) closes its copy of the descriptor at once,
    so the lock dies with the writer, not with its last child.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / LOCK_NAME
        self._fd: int | None = None
        self._close: weakref.finalize[[int], DirectoryLock] | None = None

    def acquire(self) -> None:
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise CheckpointLockedError(
                f"{self.directory} is locked by another checkpoint writer ({holder}); two "
                "writers in one directory would delete each other's checkpoints. Stop the "
                "other writer or save to another directory.",
                path=self.directory,
            ) from None
        # A forgotten saver must not hold the lock for the rest of the process.
        self._fd = fd
        self._close = weakref.finalize(self, _close_quietly, fd)
        _HELD.add(self)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        with contextlib.suppress(OSError):  # only feeds a second writer's error message
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)

    def _open(self) -> int:
        """Open (or create) the lock file, refusing anything but our own plain file."""
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(self.path, flags, 0o644)
        except FileNotFoundError:
            raise CheckpointNotFoundError(
                f"{self.directory} does not exist", path=self.directory
            ) from None
        except OSError as exc:
            cause = "it is a symlink" if exc.errno == errno.ELOOP else exc.strerror
            raise self._refused(cause, exc.errno) from exc
        try:
            info = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            raise self._refused(exc.strerror, exc.errno) from exc
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            kind = "a hard link" if stat.S_ISREG(info.st_mode) else "not a plain file"
            raise self._refused(f"it is {kind}", None)
        return fd

    def _refused(self, cause: str | None, code: int | None) -> CheckpointWriteError:
        return CheckpointWriteError(
            f"cannot lock {self.directory} for writing: {cause} ({self.path}); the lock file "
            f"must be a plain file this library creates; remove {LOCK_NAME} if something "
            "else is in its place",
            path=self.directory,
            errno=code,
        )

    @property
    def held(self) -> bool:
        """Whether this process holds the lock (False in a child forked while it was held)."""
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (closing the descriptor drops the flock); safe to call twice."""
        if self._close is not None:
            self._close()
            self._close = None
        self._fd = None
        _HELD.discard(self)

    def _forget_in_child(self) -> None:
        """In a forked child: close the inherited descriptor without touching the lock,
        which stays the parent's (an flock lives while any copy of it is open)."""
        if self._close is not None:
            self._close.detach()
            self._close = None
        if self._fd is not None:
            _close_quietly(self._fd)
            self._fd = None


_HELD: weakref.WeakSet[DirectoryLock] = weakref.WeakSet()


def _forget_locks_in_child() -> None:
    for lock in list(_HELD):
        lock._forget_in_child()
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on host {info['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
