"""Reading checkpoints from object storage: listing manifests, range reads, verification.

The checks and errors are :class:`trainhooks._store._checked.CheckedReader`'s, shared with
the local ``CheckpointReader``; this class only fetches: listings and range reads.
A prefix without ``manifest.json`` is not a checkpoint. Only the byte ranges asked for are
downloaded: opening a checkpoint reads its manifest and each data object's header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import crc32c

from trainhooks._exceptions import (
    CheckpointError,
    CheckpointNotFoundError,
)
from trainhooks._store._checked import CheckedReader
from trainhooks._store._info import newest_first_key
from trainhooks._store._layout import MANIFEST_FILE, parse_committed
from trainhooks._store._manifest import Manifest, TensorRecord
from trainhooks._store._remote._objects import READ_CHUNK, ObjectStore, open_objects, parallel
from trainhooks._store._remote._url import ObjectPath

__all__ = ["Commit", "RemoteCheckpointReader", "commits_newest_first", "committed_checkpoints"]

_HEADER_GUESS = 64 * 1024


class RemoteCheckpointReader(CheckedReader):
    """One committed checkpoint in object storage, structure-checked on open.

    ``listing`` (the sizes of its objects, from a listing already made) saves a request;
    ``data_files=False`` reads the manifest only (one request), and
    :meth:`check_data_files` completes the check later.
    """

    _verify_chunk = 16 * 1024 * 1024  # fewer, larger range requests

    def __init__(
        self,
        path: ObjectPath | str,
        *,
        storage_options: dict[str, Any] | None = None,
        listing: dict[str, int] | None = None,
        data_files: bool = True,
    ) -> None:
        self.path = ObjectPath(str(path))
        self.step: int | None = None
        self._fetched: dict[str, memoryview] = {}  # prefetched tensors, not yet handed out
        self.objects, self.root = open_objects(str(self.path), storage_options)
        try:
            self._sizes = self.objects.list(self.root) if listing is None else listing
            self.manifest = self._read_manifest()
            self._check_step_matches_name()
            self.step = self.manifest.step
        except CheckpointError:
            raise
        except Exception as exc:
            raise self._read_error(exc) from exc
        if data_files:
            self.check_data_files()

    def check_data_files(self) -> RemoteCheckpointReader:
        """Check each data object's size and header against the manifest (one small range
        read each); the structure check a reader opened with ``data_files=False`` skipped."""
        try:
            for name in self.manifest.files:
                self._check_data_file(name)
        except CheckpointError:
            raise
        except Exception as exc:
            raise self._read_error(exc) from exc
        return self

    def close(self) -> None:
        """Nothing stays open between reads; kept for the reader interface."""

    def __enter__(self) -> RemoteCheckpointReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading tensors ----------------------------------------------------------------
    def mapped_view(self, record: TensorRecord, *, verify: bool = True) -> memoryview:
        """The tensor's bytes, downloaded into private memory (or prefetched) and verified."""
        out = self._fetched.pop(record.name, None)
        if out is None:
            out = memoryview(bytearray(record.end - record.begin))
            self._read_range(record, out, record.begin)
        if verify:
            self._check_crc(record, crc32c.crc32c(out))
        return out

    def prefetch(self, records: list[TensorRecord]) -> None:
        """Download the byte ranges of ``records`` at once, in parallel range requests of
        up to 64 MiB (a restore's tensors: one request each after the other would leave
        the connection idle between them); :meth:`mapped_view` hands them out verified."""
        buffers = {r.name: memoryview(bytearray(r.end - r.begin)) for r in records}
        spans = [
            (r, start, min(start + READ_CHUNK, r.end - r.begin))
            for r in records
            for start in range(0, r.end - r.begin, READ_CHUNK)
        ]

        def fetch(span: tuple[TensorRecord, int, int]) -> None:
            record, start, end = span
            self._read_range(record, buffers[record.name][start:end], record.begin + start)

        parallel(fetch, spans, "trainhooks-read")
        self._fetched.update(buffers)

    def read_into(self, record: TensorRecord, out: memoryview, *, verify: bool = True) -> None:
        """Download ``record``'s byte range into ``out`` and verify its crc32c."""
        self._read_range(record, out, record.begin)
        if verify:
            self._check_crc(record, crc32c.crc32c(out))

    def _read_range(self, record: TensorRecord, out: memoryview, offset: int) -> None:
        try:
            self.objects.read_into(f"{self.root}/{record.file}", offset, out)
        except Exception as exc:
            raise self._read_error(exc, record) from exc

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
        path = f"{self.root}/{MANIFEST_FILE}"
        return self._parse_manifest(size, lambda: self.objects.read(path, 0, size + 1))

    def _check_data_file(self, name: str) -> None:
        size, path = self._size_of(name), f"{self.root}/{name}"
        head = b""  # the first range read fetches the header whole, unless it is huge

        def read_at(offset: int, length: int) -> bytes:
            nonlocal head
            if not head:
                head = self.objects.read(path, 0, min(size, max(_HEADER_GUESS, 8)))
            if offset + length <= len(head):
                return head[offset : offset + length]
            return self.objects.read(path, offset, offset + length)

        self._check_header(name, size, read_at)

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


@dataclass(frozen=True)
class Commit:
    """A prefix holding a manifest: its name, its objects' sizes (from the listing) and
    a reader of its manifest (data objects not yet checked), None when that failed."""

    url: str
    name: str
    sizes: dict[str, int]
    reader: RemoteCheckpointReader | None

    def open(self, storage_options: dict[str, Any] | None = None) -> RemoteCheckpointReader:
        """The checkpoint, structure-checked in full (raises what makes it unusable)."""
        if self.reader is not None:
            return self.reader.check_data_files()
        return RemoteCheckpointReader(
            f"{self.url}/{self.name}", storage_options=storage_options, listing=self.sizes
        )


def commits_newest_first(
    objects: ObjectStore,
    url: str,
    root: str,
    basename: str,
    storage_options: dict[str, Any] | None = None,
) -> list[Commit]:
    """The prefixes under ``root`` (the path of ``url``) holding a manifest, the last
    committed first: one listing, then each manifest read once, in parallel.

    The local order (``_store/_listing.ordered_commits``): by each manifest's
    ``sequence``, then by step, so checkpoints saved before remote manifests carried one
    count as older than any with one; one whose manifest cannot be read comes first.
    """

    def read(found: tuple[int, str, dict[str, int]]) -> tuple[tuple[int, int, int], Commit]:
        step, name, sizes = found
        try:
            reader = RemoteCheckpointReader(
                f"{url}/{name}", storage_options=storage_options, listing=sizes, data_files=False
            )
        except CheckpointError:
            return newest_first_key(step, None), Commit(url, name, sizes, None)
        return newest_first_key(step, reader.manifest.sequence), Commit(url, name, sizes, reader)

    keyed = parallel(read, committed_checkpoints(objects, root, basename), "trainhooks-order")
    keyed.sort(key=lambda item: item[0], reverse=True)
    return [commit for _, commit in keyed]
