"""Reading committed checkpoints: finding them, validating them, verifying their bytes.

Two levels of checking: the *structure* check (manifest checksum and schema, files are plain
files of the recorded sizes, each safetensors header matches the manifest) is cheap and used
for listing; the *full* check also recomputes every tensor's crc32c and runs before a
restored tensor is handed out.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import stat
from pathlib import Path

import crc32c

from trainhooks._exceptions import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointNotFoundError,
)
from trainhooks._store._checked import CheckedReader, Progress
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import (
    MANIFEST_FILE,
    split_committed,
)
from trainhooks._store._manifest import Manifest, TensorRecord
from trainhooks._store._remote._url import as_url, local_path

__all__ = ["CheckpointReader", "checkpoint_info", "verify_checkpoint"]

_CHUNK = 4 * 1024 * 1024


class CheckpointReader(CheckedReader):
    """One committed checkpoint, structure-checked on open; reads tensors with verification.

    Every file is opened once, relative to a descriptor of the checkpoint directory, and
    kept open: a writer's retention renaming or deleting the checkpoint afterwards cannot
    make a read fail halfway (the open files outlive their names). Use as a context manager
    or call :meth:`close`. ``follow_symlinks=False`` refuses a symlink in the checkpoint's
    place (for checkpoints found by name); ``data_files=False`` checks the manifest only.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        follow_symlinks: bool = True,
        data_files: bool = True,
    ) -> None:
        self.path = Path(path)
        self.step: int | None = None
        self._maps: dict[str, mmap.mmap] = {}
        self._files: dict[str, int] = {}
        self._dir: int | None = None
        self._manifest_size = 0
        self._open_directory(follow_symlinks)
        try:
            self.manifest = self._read_manifest()
            self._check_step_matches_name()
            self.step = self.manifest.step
            for name in self.manifest.files if data_files else ():  # False: manifest only
                self._check_data_file(name)
        except BaseException as exc:
            self.close()
            if isinstance(exc, OSError):
                raise self._os_error(exc) from exc
            raise

    def _open_directory(self, follow_symlinks: bool) -> None:
        """Open the checkpoint directory; without ``follow_symlinks`` (a checkpoint found in
        a directory scan or asked for by step) a symlink in its place is refused."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        try:
            self._dir = os.open(self.path, flags | (0 if follow_symlinks else os.O_NOFOLLOW))
        except (FileNotFoundError, NotADirectoryError):
            if not follow_symlinks and self.path.is_symlink():
                raise self._symlinked() from None
            raise CheckpointNotFoundError(f"{self.path} does not exist", path=self.path) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._symlinked() from None
            raise self._os_error(exc) from exc

    def _symlinked(self) -> CheckpointCorruptError:
        return self._corrupt(
            "it is a symlink, not a checkpoint directory (refused: a checkpoint found by "
            "name is never read through a link)"
        )

    def close(self) -> None:
        """Close the checkpoint's files (mappings handed out stay valid)."""
        for fd in [*self._files.values(), getattr(self, "_dir", None)]:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._files.clear()
        self._dir = None

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    # -- reading tensors ----------------------------------------------------------------
    def mapped_view(self, record: TensorRecord, *, verify: bool = True) -> memoryview:
        """A zero-copy view of ``record``'s bytes in a private (copy-on-write) mapping of its
        file, verified against its crc32c. Writes to the view never reach the file."""
        mapping = self._maps.get(record.file)
        if mapping is None:
            try:
                mapping = mmap.mmap(self._files[record.file], 0, access=mmap.ACCESS_COPY)
            except OSError as exc:
                raise self._os_error(exc, record) from exc
            self._maps[record.file] = mapping
        view = memoryview(mapping)[record.begin : record.end]
        _prefault(mapping, record.begin, record.end)
        if verify:
            self._check_crc(record, crc32c.crc32c(view))
        return view

    def read_into(self, record: TensorRecord, out: memoryview, *, verify: bool = True) -> None:
        """Read ``record``'s bytes into ``out`` (a writable flat byte view) and verify them."""
        value = 0
        for start in range(0, record.end - record.begin, _CHUNK):
            chunk = out[start : start + _CHUNK]
            self._pread_exactly(record, chunk, record.begin + start)
            if verify:
                value = crc32c.crc32c(chunk, value)
        if verify:
            self._check_crc(record, value)

    def _read_range(self, record: TensorRecord, out: memoryview, offset: int) -> None:
        self._pread_exactly(record, out, offset)

    def _pread_exactly(self, record: TensorRecord, out: memoryview, offset: int) -> None:
        fd = self._files[record.file]
        while len(out):
            try:
                n = os.preadv(fd, [out], offset)
            except OSError as exc:
                raise self._os_error(exc, record) from exc
            if n <= 0:
                raise self._corrupt(f"{record.file} ends inside tensor {record.name!r}", record)
            out, offset = out[n:], offset + n

    # -- structure checks -------------------------------------------------------------
    def _open_plain_file(self, name: str) -> tuple[int, os.stat_result]:
        """Open ``name`` inside the checkpoint, refusing symlinks and anything not a file."""
        if not name or name != os.path.basename(name) or name in {".", ".."} or "\\" in name:
            raise self._corrupt(f"the manifest names a file outside the checkpoint: {name!r}")
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(name, flags, dir_fd=self._dir)
        except FileNotFoundError:
            raise self._missing(name) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._corrupt(f"{name} is a symlink (refused)", file=name) from None
            raise
        try:
            info = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise self._corrupt(f"{name} is not a plain file", file=name)
        return fd, info

    def _missing(self, name: str) -> CheckpointError:
        """A file missing from a checkpoint that still exists is damage; if the checkpoint
        itself is gone (a writer's retention), it was simply deleted."""
        if not self.path.is_dir():
            return CheckpointNotFoundError(f"{self.path} was removed", path=self.path)
        if name == MANIFEST_FILE and split_committed(self.path.name) is None:
            return CheckpointNotFoundError(
                f"{self.path} is not a trainhooks checkpoint (no {MANIFEST_FILE}; it should be "
                "a directory like ckpt-000000000100)",
                path=self.path,
            )
        return self._corrupt(f"{name} is missing", file=name)

    def _read_manifest(self) -> Manifest:
        fd, info = self._open_plain_file(MANIFEST_FILE)
        try:
            return self._parse_manifest(info.st_size, lambda: os.pread(fd, info.st_size + 1, 0))
        finally:
            os.close(fd)

    def _check_data_file(self, name: str) -> None:
        fd, info = self._open_plain_file(name)
        self._files[name] = fd
        self._check_header(name, info.st_size, lambda offset, n: os.pread(fd, n, offset))

    def _os_error(self, exc: OSError, record: TensorRecord | None = None) -> CheckpointError:
        """A read that failed in the operating system: EIO means the medium lost the bytes
        (corrupt: restore falls back); anything else (permissions, ...) is a plain error."""
        where = f"{exc.filename or self.path}"
        if exc.errno == errno.EIO:
            return self._corrupt(f"I/O error reading {where}: {exc.strerror}", record)
        error = CheckpointError(
            f"cannot read checkpoint {self.path}: {exc.strerror or exc} ({where})",
            path=self.path,
            step=self.step,
        )
        error.errno = exc.errno  # type: ignore[attr-defined]
        return error


def checkpoint_info(path: str | os.PathLike[str]) -> CheckpointInfo:
    """One checkpoint's facts after the cheap structure check (no tensor bytes are read);
    raises ``CheckpointNotFoundError`` or ``CheckpointCorruptError`` like the readers."""
    if (url := as_url(path)) is not None:
        from trainhooks._store._remote import _api

        return _api.checkpoint_info(url)
    path = local_path(path)
    with CheckpointReader(path) as reader:
        return reader.info


def verify_checkpoint(
    path: str | os.PathLike[str], *, progress: Progress | None = None
) -> CheckpointInfo:
    """Fully verify one checkpoint; raise :class:`CheckpointCorruptError` naming what is bad."""
    if (url := as_url(path)) is not None:
        from trainhooks._store._remote import _api

        return _api.verify_checkpoint(url, progress)
    path = local_path(path)
    with CheckpointReader(path) as reader:
        return reader.verify(progress)


_READ_AHEAD = 64 * 1024 * 1024


def _prefault(mapping: mmap.mmap, begin: int, end: int) -> None:
    """Ask the kernel to read a tensor's pages and the next 64 MiB in the background
    (``MADV_WILLNEED`` is asynchronous), so the disk works on the next tensor while this one
    is checksummed. Measured here: faster than faulting page by page, and than
    ``MADV_POPULATE_READ``, which reads synchronously and so overlaps nothing."""
    start = begin - begin % mmap.PAGESIZE
    length = min(len(mapping), end + _READ_AHEAD) - start
    if length > 0:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            mapping.madvise(mmap.MADV_WILLNEED, start, length)
