"""What every checkpoint reader checks, wherever the bytes come from: one implementation.

The local reader (``_reader.CheckpointReader``: files, ``pread``, mappings) and the object
storage reader (``_remote._reader.RemoteCheckpointReader``: listings, range reads) differ
only in how they fetch bytes. Parsing the manifest, comparing a data file's size and
safetensors header with the manifest, recomputing checksums and wording the errors are
the same checks with the same messages, so they live here once, in :class:`CheckedReader`,
and each reader supplies the fetching.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import crc32c

from trainhooks._exceptions import CheckpointCorruptError, CheckpointFormatError
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import MANIFEST_FILE, split_committed
from trainhooks._store._limits import MAX_MANIFEST_BYTES
from trainhooks._store._manifest import Manifest, ManifestError, TensorRecord
from trainhooks._store._safetensors import HeaderError, header_length, parse_header

__all__ = ["CheckedReader", "Progress"]

Progress = Callable[[int, int], None]
ReadAt = Callable[[int, int], bytes]  # (offset, length) -> bytes of a data file


class CheckedReader:
    """The checks and errors of a checkpoint reader; subclasses fetch the bytes.

    A subclass sets ``path`` and ``step`` first, then ``manifest`` from
    :meth:`_parse_manifest`, and checks each data file with :meth:`_check_header`; it
    implements :meth:`_read_range` for :meth:`verify`.
    """

    path: Any  # Path or ObjectPath: what the errors name
    step: int | None
    manifest: Manifest
    _manifest_size: int = 0
    _verify_chunk = 4 * 1024 * 1024

    @property
    def info(self) -> CheckpointInfo:
        m = self.manifest
        nbytes = m.nbytes + self._manifest_size
        return CheckpointInfo(
            m.step,
            self.path,
            m.time,
            nbytes,
            len(m.tensors),
            m.format_version,
            m.metadata,
            m.sequence,
        )

    def verify(self, progress: Progress | None = None) -> CheckpointInfo:
        """Recompute every tensor's checksum without keeping the data (bounded memory)."""
        total = sum(r.end - r.begin for r in self.manifest.tensors)
        scratch = memoryview(bytearray(min(self._verify_chunk, max(total, 1))))
        done = 0
        for record in self.manifest.tensors:
            value, position = 0, record.begin
            while position < record.end:
                chunk = scratch[: min(record.end - position, len(scratch))]
                self._read_range(record, chunk, position)
                value = crc32c.crc32c(chunk, value)
                position += len(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            self._check_crc(record, value)
        return self.info

    def _read_range(self, record: TensorRecord, out: memoryview, offset: int) -> None:
        """Fill ``out`` with the bytes of ``record``'s file at ``offset``."""
        raise NotImplementedError

    # -- the checks -----------------------------------------------------------------
    def _parse_manifest(self, size: int, read: Callable[[], bytes]) -> Manifest:
        """Parse the manifest of ``size`` bytes (as listed) that ``read`` returns."""
        if size > MAX_MANIFEST_BYTES:
            raise self._corrupt(
                f"{MANIFEST_FILE} is {size} bytes, over the cap", file=MANIFEST_FILE
            )
        data = read()
        self._manifest_size = len(data)
        try:
            return Manifest.from_bytes(data)
        except ManifestError as exc:
            if exc.newer:
                raise CheckpointFormatError(f"{self.path}: {exc}", path=self.path) from None
            raise self._corrupt(f"{MANIFEST_FILE}: {exc}", file=MANIFEST_FILE) from None

    def _check_step_matches_name(self) -> None:
        """A checkpoint named for one step whose manifest claims another was tampered with
        (a directory or an object-storage prefix alike)."""
        named = split_committed(self.path.name)
        if named is not None and named[1] != self.manifest.step:
            raise self._corrupt(
                f"{MANIFEST_FILE} says step {self.manifest.step} but the directory is named "
                f"for step {named[1]}",
                file=MANIFEST_FILE,
            )

    def _check_header(self, name: str, size: int, read_at: ReadAt) -> None:
        """Check data file ``name`` of ``size`` bytes against the manifest: its size, its
        header's checksum, and that the header lists exactly the manifest's tensors."""
        expected = self.manifest.files[name]
        if size != expected.get("size"):
            cut = next((r for r in self.manifest.tensors if r.file == name and r.end > size), None)
            raise self._corrupt(
                f"{name} is {size} bytes, the manifest says {expected.get('size')} "
                "(truncated or overwritten?)",
                cut,
                file=name,
            )
        try:
            prefix = read_at(0, 8)
            length = header_length(prefix, size)
            header = read_at(8, length)
            if crc32c.crc32c(header, crc32c.crc32c(prefix)) != expected.get("header_crc32c"):
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

    def _check_crc(self, record: TensorRecord, value: int) -> None:
        if value != record.crc32c:
            raise self._corrupt(
                f"tensor {record.name!r} in {record.file} fails its crc32c check over bytes "
                f"{record.begin}..{record.end} (stored {record.crc32c:08x}, read {value:08x})",
                record,
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
        path: str | os.PathLike[str] = self.path
        return CheckpointCorruptError(
            f"checkpoint {path}{step} is corrupt: {cause}",
            path=path,
            step=self.step,
            file=record.file if record else file,
            tensor=record.name if record else tensor,
            byte_range=(record.begin, record.end) if record else None,
        )
