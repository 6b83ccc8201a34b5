"""Reading checkpoints from object storage: listing manifests, range reads, verification.

Mirrors :class:`trainhooks._store._reader.CheckpointReader` (same structure check, same
errors, same methods used by ``Saver`` and ``load``) with the format code shared: the
manifest is parsed by ``Manifest``, headers by ``_safetensors``, limits from ``_limits``.
A prefix without ``manifest.json`` is not a checkpoint. Only the byte ranges asked for are
downloaded: opening a checkpoint reads its manifest and each data object's header.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import crc32c

from trainhooks._exceptions import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointFormatError,
    CheckpointNotFoundError,
)
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import MANIFEST_FILE, parse_committed
from trainhooks._store._limits import MAX_MANIFEST_BYTES
from trainhooks._store._manifest import Manifest, ManifestError, TensorRecord
from trainhooks._store._remote._objects import ObjectStore, open_objects
from trainhooks._store._remote._url import ObjectPath
from trainhooks._store._safetensors import HeaderError, header_length, parse_header

__all__ = ["RemoteCheckpointReader", "committed_checkpoints"]

_CHUNK = 16 * 1024 * 1024
_HEADER_GUESS = 64 * 1024
Progress = Callable[[int, int], None]


class RemoteCheckpointReader:
    """One committed checkpoint in object storage, structure-checked on open."""

    def __init__(
        self,
        path: ObjectPath | str,
        *,
        storage_options: dict[str, Any] | None = None,
        listing: dict[str, int] | None = None,
    ) -> None:
        self.path = ObjectPath(str(path))
        self.step: int | None = None
        self.objects, self.root = open_objects(str(self.path), storage_options)
        try:
            self._sizes = self.objects.list(self.root) if listing is None else listing
            self.manifest = self._read_manifest()
            self.step = self.manifest.step
            for name in self.manifest.files:
                self._check_data_file(name)
        except CheckpointError:
            raise
        except Exception as exc:
            raise self._read_error(exc) from exc

    def close(self) -> None:
        """Nothing stays open between reads; kept for the reader interface."""

    def __enter__(self) -> RemoteCheckpointReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def info(self) -> CheckpointInfo:
        m = self.manifest
        nbytes = m.nbytes + self._manifest_size
        return CheckpointInfo(
            m.step, self.path, m.time, nbytes, len(m.tensors), m.format_version, m.metadata
        )

    # -- reading tensors ----------------------------------------------------------------
    def mapped_view(self, record: TensorRecord, *, verify: bool = True) -> memoryview:
        """The tensor's bytes, downloaded into private memory and verified."""
        out = memoryview(bytearray(record.end - record.begin))
        self.read_into(record, out, verify=verify)
        return out

    def read_into(self, record: TensorRecord, out: memoryview, *, verify: bool = True) -> None:
        """Download ``record``'s byte range into ``out`` and verify its crc32c."""
        try:
            self.objects.read_into(f"{self.root}/{record.file}", record.begin, out)
        except Exception as exc:
            raise self._read_error(exc, record) from exc
        if verify:
            self._check_crc(record, crc32c.crc32c(out))

    def verify(self, progress: Progress | None = None) -> CheckpointInfo:
        """Recompute every tensor's checksum, downloading it in bounded chunks."""
        total = sum(r.end - r.begin for r in self.manifest.tensors)
        scratch = memoryview(bytearray(min(_CHUNK, max(total, 1))))
        done = 0
        for record in self.manifest.tensors:
            value, position = 0, record.begin
            while position < record.end:
                chunk = scratch[: min(record.end - position, len(scratch))]
                try:
                    self.objects.read_into(f"{self.root}/{record.file}", position, chunk)
                except Exception as exc:
                    raise self._read_error(exc, record) from exc
                value = crc32c.crc32c(chunk, value)
                position += len(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            self._check_crc(record, value)
        return self.info

    def _check_crc(self, record: TensorRecord, value: int) -> None:
        if value != record.crc32c:
            raise self._corrupt(
                f"tensor {record.name!r} in {record.file} fails its crc32c check over bytes "
                f"{record.begin}..{record.end} (stored {record.crc32c:08x}, read {value:08x})",
                record,
            )

    # -- structure checks -------------------------------------------------------------
    def _size_of(self, name: str) -> int:
        if not name or "/" in name or "\\" in name or name in {".", ".."}:
            raise self._corrupt(f"the manifest names a file outside the checkpoint: {name!r}")
        size = self._sizes.get(f"{self.root}/{name}")
        if size is None:
            if name == MANIFEST_FILE:
                raise CheckpointNotFoundError(
                    f"{self.path} is not a committed checkpoint (no {MANIFEST_FILE})",
                    path=str(self.path),
                )
            raise self._corrupt(f"{name} is missing", file=name)
        return size

    def _read_manifest(self) -> Manifest:
        size = self._size_of(MANIFEST_FILE)
        if size > MAX_MANIFEST_BYTES:
            raise self._corrupt(
                f"{MANIFEST_FILE} is {size} bytes, over the cap", file=MANIFEST_FILE
            )
        data = self.objects.read(f"{self.root}/{MANIFEST_FILE}", 0, size + 1)
        self._manifest_size = len(data)
        try:
            return Manifest.from_bytes(data)
        except ManifestError as exc:
            if exc.newer:
                raise CheckpointFormatError(f"{self.path}: {exc}", path=str(self.path)) from None
            raise self._corrupt(f"{MANIFEST_FILE}: {exc}", file=MANIFEST_FILE) from None

    def _check_data_file(self, name: str) -> None:
        size = self._size_of(name)
        expected = self.manifest.files[name]
        if size != expected.get("size"):
            cut = next((r for r in self.manifest.tensors if r.file == name and r.end > size), None)
            raise self._corrupt(
                f"{name} is {size} bytes, the manifest says {expected.get('size')} "
                "(truncated or overwritten?)",
                cut,
                file=name,
            )
        path = f"{self.root}/{name}"
        try:
            head = self.objects.read(path, 0, min(size, _HEADER_GUESS))
            length = header_length(head[:8], size)
            if 8 + length > len(head):
                head = self.objects.read(path, 0, 8 + length)
            header = head[8 : 8 + length]
            if crc32c.crc32c(head[: 8 + length]) != expected.get("header_crc32c"):
                raise HeaderError("header fails its crc32c check")
            entries, _ = parse_header(header, size)
        except HeaderError as exc:
            raise self._corrupt(f"{name}: {exc}", tensor=exc.tensor, file=name) from None
        recorded = {
            (r.name, r.dtype, r.shape, r.begin, r.end)
            for r in self.manifest.tensors
            if r.file == name
        }
        if recorded != {(e.name, e.dtype, e.shape, e.begin, e.end) for e in entries}:
            raise self._corrupt(f"{name}: its header disagrees with {MANIFEST_FILE}", file=name)

    def _read_error(self, exc: Exception, record: TensorRecord | None = None) -> CheckpointError:
        """A failed download: an object gone from a checkpoint still listed is corrupt
        (restore falls back); anything else (network, permissions) is a plain error."""
        if isinstance(exc, (FileNotFoundError, EOFError)):
            return self._corrupt(f"object missing or short: {exc}", record)
        return CheckpointError(
            f"cannot read checkpoint {self.path}: {type(exc).__name__}: {exc}",
            path=str(self.path),
            step=self.step,
        )

    def _corrupt(
        self,
        cause: str,
        record: TensorRecord | None = None,
        *,
        tensor: str | None = None,
        file: str | None = None,
    ) -> CheckpointCorruptError:
        step = f" (step {self.step})" if self.step is not None else ""
        return CheckpointCorruptError(
            f"checkpoint {self.path}{step} is corrupt: {cause}",
            path=str(self.path),
            step=self.step,
            file=record.file if record else file,
            tensor=record.name if record else tensor,
            byte_range=(record.begin, record.end) if record else None,
        )


def committed_checkpoints(
    objects: ObjectStore, root: str, basename: str
) -> list[tuple[int, str, dict[str, int]]]:
    """``(step, checkpoint name, its objects' sizes)`` of every prefix under ``root`` that
    holds a manifest, newest first, from one listing (not yet validated)."""
    by_name: dict[str, dict[str, int]] = {}
    for path, size in objects.list(root).items():
        rest = path[len(root) + 1 :] if path.startswith(root + "/") else ""
        name, _, leaf = rest.partition("/")
        if leaf and "/" not in leaf:
            by_name.setdefault(name, {})[path] = size
    found = []
    for name, sizes in by_name.items():
        step = parse_committed(name, basename)
        if step is not None and f"{root}/{name}/{MANIFEST_FILE}" in sizes:
            found.append((step, name, sizes))
    found.sort(reverse=True)
    return found
