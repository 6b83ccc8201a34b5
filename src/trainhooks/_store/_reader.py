"""Reading committed checkpoints: finding them, validating them, verifying their bytes.

Two levels of checking: the *structure* check (manifest checksum and schema, files are plain
files of the recorded sizes, each safetensors header matches the manifest) is cheap and used
for listing; the *full* check also recomputes every tensor's crc32c and runs before a
restored tensor is handed out.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
from collections.abc import Callable
from pathlib import Path

import crc32c

from trainhooks._exceptions import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointFormatError,
    CheckpointNotFoundError,
)
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import DEFAULT_BASENAME, MANIFEST_FILE, parse_committed
from trainhooks._store._limits import MAX_MANIFEST_BYTES
from trainhooks._store._manifest import Manifest, ManifestError, TensorRecord
from trainhooks._store._safetensors import HeaderError, header_length, parse_header

__all__ = [
    "CheckpointReader",
    "latest_checkpoint",
    "list_checkpoints",
    "verify_checkpoint",
]

_CHUNK = 4 * 1024 * 1024
Progress = Callable[[int, int], None]


class CheckpointReader:
    """One committed checkpoint, structure-checked on open; reads tensors with verification."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.step: int | None = None
        self._maps: dict[str, mmap.mmap] = {}
        self.manifest = self._read_manifest()
        self.step = self.manifest.step
        for name in self.manifest.files:
            self._check_data_file(name)

    def mapped_view(self, record: TensorRecord, *, verify: bool = True) -> memoryview:
        """A zero-copy view of ``record``'s bytes in a private (copy-on-write) mapping of its
        file, verified against its crc32c. Writes to the view never reach the file."""
        mapping = self._maps.get(record.file)
        if mapping is None:
            with open(self._file_path(record.file), "rb") as f:
                mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            self._maps[record.file] = mapping
        view = memoryview(mapping)[record.begin : record.end]
        _prefault(mapping, record.begin, record.end)
        if verify:
            value = crc32c.crc32c(view)
            if value != record.crc32c:
                raise self._corrupt(
                    f"tensor {record.name!r} in {record.file} fails its crc32c check over bytes "
                    f"{record.begin}..{record.end} (stored {record.crc32c:08x}, read {value:08x})",
                    record,
                )
        return view

    @property
    def info(self) -> CheckpointInfo:
        m = self.manifest
        nbytes = m.nbytes + self._manifest_size
        return CheckpointInfo(m.step, self.path, m.time, nbytes, len(m.tensors), m.format_version)

    def read_into(self, record: TensorRecord, out: memoryview, *, verify: bool = True) -> None:
        """Read ``record``'s bytes into ``out`` (a writable flat byte view) and verify them."""
        with open(self._file_path(record.file), "rb", buffering=0) as f:
            f.seek(record.begin)
            value = 0
            for start in range(0, record.end - record.begin, _CHUNK):
                chunk = out[start : start + _CHUNK]
                if f.readinto(chunk) != len(chunk):
                    raise self._corrupt(f"{record.file} ends inside tensor {record.name!r}", record)
                if verify:
                    value = crc32c.crc32c(chunk, value)
        if verify and value != record.crc32c:
            raise self._corrupt(
                f"tensor {record.name!r} in {record.file} fails its crc32c check over bytes "
                f"{record.begin}..{record.end} (stored {record.crc32c:08x}, read {value:08x})",
                record,
            )

    def verify(self, progress: Progress | None = None) -> CheckpointInfo:
        """Recompute every tensor's checksum without keeping the data (bounded memory)."""
        total = sum(r.end - r.begin for r in self.manifest.tensors)
        scratch = memoryview(bytearray(min(_CHUNK, max(total, 1))))
        done = 0
        for record in self.manifest.tensors:
            with open(self._file_path(record.file), "rb", buffering=0) as f:
                f.seek(record.begin)
                value, remaining = 0, record.end - record.begin
                while remaining:
                    chunk = scratch[: min(remaining, len(scratch))]
                    if f.readinto(chunk) != len(chunk):
                        raise self._corrupt(
                            f"{record.file} ends inside tensor {record.name!r}", record
                        )
                    value = crc32c.crc32c(chunk, value)
                    remaining -= len(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
            if value != record.crc32c:
                raise self._corrupt(
                    f"tensor {record.name!r} in {record.file} fails its crc32c check over bytes "
                    f"{record.begin}..{record.end}",
                    record,
                )
        return self.info

    # -- structure checks -------------------------------------------------------------
    def _read_manifest(self) -> Manifest:
        path = self.path / MANIFEST_FILE
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            if (
                not self.path.is_dir()
                or parse_committed(self.path.name, _basename_of(self.path)) is None
            ):
                raise CheckpointNotFoundError(
                    f"{self.path} is not a trainhooks checkpoint (no {MANIFEST_FILE}; it "
                    "should be a directory like ckpt-000000000100)"
                    if self.path.is_dir()
                    else f"{self.path} does not exist",
                    path=self.path,
                ) from None
            raise self._corrupt(f"{MANIFEST_FILE} is missing: not a committed checkpoint") from None
        if not stat.S_ISREG(info.st_mode):
            raise self._corrupt(f"{MANIFEST_FILE} is not a plain file (symlinks are refused)")
        if info.st_size > MAX_MANIFEST_BYTES:
            raise self._corrupt(f"{MANIFEST_FILE} is {info.st_size} bytes, over the cap")
        self._manifest_size = info.st_size
        try:
            manifest = Manifest.from_bytes(path.read_bytes())
        except ManifestError as exc:
            if exc.newer:
                raise CheckpointFormatError(f"{self.path}: {exc}", path=self.path) from None
            raise self._corrupt(f"{MANIFEST_FILE}: {exc}") from None
        return manifest

    def _check_data_file(self, name: str) -> None:
        path = self._file_path(name)
        expected = self.manifest.files[name]
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            raise self._corrupt(f"{name} is missing") from None
        if not stat.S_ISREG(info.st_mode):
            raise self._corrupt(f"{name} is not a plain file (symlinks are refused)")
        if info.st_size != expected.get("size"):
            cut = next(
                (r for r in self.manifest.tensors if r.file == name and r.end > info.st_size), None
            )
            raise self._corrupt(
                f"{name} is {info.st_size} bytes, the manifest says {expected.get('size')} "
                "(truncated or overwritten?)",
                cut,
            )
        with open(path, "rb", buffering=0) as f:
            prefix = f.read(8)
            try:
                length = header_length(prefix, info.st_size)
                header = f.read(length)
                if crc32c.crc32c(header, crc32c.crc32c(prefix)) != expected.get("header_crc32c"):
                    raise HeaderError("header fails its crc32c check")
                entries, _ = parse_header(header, info.st_size)
            except HeaderError as exc:
                raise self._corrupt(f"{name}: {exc}", tensor=exc.tensor) from None
        recorded = {
            (r.name, r.dtype, r.shape, r.begin, r.end)
            for r in self.manifest.tensors
            if r.file == name
        }
        if recorded != {(e.name, e.dtype, e.shape, e.begin, e.end) for e in entries}:
            raise self._corrupt(f"{name}: its header disagrees with {MANIFEST_FILE}")

    def _file_path(self, name: str) -> Path:
        if not name or name != os.path.basename(name) or name in {".", ".."} or "\\" in name:
            raise self._corrupt(f"the manifest names a file outside the checkpoint: {name!r}")
        return self.path / name

    def _corrupt(
        self, cause: str, record: TensorRecord | None = None, *, tensor: str | None = None
    ) -> CheckpointCorruptError:
        step = f" (step {self.step})" if self.step is not None else ""
        return CheckpointCorruptError(
            f"checkpoint {self.path}{step} is corrupt: {cause}",
            path=self.path,
            step=self.step,
            file=record.file if record else None,
            tensor=record.name if record else tensor,
            byte_range=(record.begin, record.end) if record else None,
        )


def scan_checkpoints(
    directory: str | os.PathLike[str], basename: str = DEFAULT_BASENAME
) -> tuple[list[CheckpointInfo], list[CheckpointError]]:
    """Every committed checkpoint in ``directory`` that passes the structure check, by step,
    and the errors of those that do not."""
    valid: list[CheckpointInfo] = []
    broken: list[CheckpointError] = []
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    for name in names:
        if parse_committed(name, basename) is None:
            continue
        path = Path(directory) / name
        if path.is_symlink() or not path.is_dir():
            continue
        try:
            valid.append(CheckpointReader(path).info)
        except (CheckpointCorruptError, CheckpointFormatError) as exc:
            broken.append(exc)
    valid.sort(key=lambda info: info.step)
    return valid, broken


def list_checkpoints(
    directory: str | os.PathLike[str], *, basename: str = DEFAULT_BASENAME
) -> list[CheckpointInfo]:
    """Committed, structurally valid checkpoints in ``directory``, oldest step first."""
    return scan_checkpoints(directory, basename)[0]


def latest_checkpoint(
    directory: str | os.PathLike[str], *, basename: str = DEFAULT_BASENAME
) -> CheckpointInfo | None:
    """The newest structurally valid checkpoint, or None only when there is none at all."""
    checkpoints = list_checkpoints(directory, basename=basename)
    return checkpoints[-1] if checkpoints else None


def verify_checkpoint(
    path: str | os.PathLike[str], *, progress: Progress | None = None
) -> CheckpointInfo:
    """Fully verify one checkpoint; raise :class:`CheckpointCorruptError` naming what is bad."""
    return CheckpointReader(path).verify(progress)


def _basename_of(path: Path) -> str:
    """The basename part of ``<basename>-<step>`` (any basename counts as a checkpoint name)."""
    return path.name.rpartition("-")[0] or DEFAULT_BASENAME


_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux >= 5.14


def _prefault(mapping: mmap.mmap, begin: int, end: int) -> None:
    """Read a tensor's pages in with one call instead of one page fault per page (its bytes
    are about to be checksummed and copied). Older kernels get read-ahead advice instead."""
    start = begin - begin % mmap.PAGESIZE
    if end <= start:
        return
    try:
        mapping.madvise(_MADV_POPULATE_READ, start, end - start)
    except (OSError, ValueError, AttributeError):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            mapping.madvise(mmap.MADV_WILLNEED, start, end - start)
