"""Writing one checkpoint and committing it, in the order that survives any crash.

1. stage in ``<name>.tmp-<uuid>`` beside the final directory (same filesystem, never $TMPDIR);
2. write the data file (checksums computed over the bytes as they are written), fsync, close;
3. write the manifest last, fsync, close; fsync the staging directory;
4. ``rename(staging, final)`` — the commit point — then fsync the parent directory.
Only then does the caller see success. Any OSError before the commit point removes the
staging directory and becomes a :class:`CheckpointWriteError` carrying errno, path and step.
A save running in the background (given a ``cancel`` event) writes in ``BACKGROUND_CHUNK``
calls and can be cancelled (Ctrl-C while the training thread waits for it): the event is
checked before every call and before the commit point, and a cancelled save ends like a
failed one (``ECANCELED``, staging removed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c

from trainhooks._exceptions import CheckpointFormatError, CheckpointWriteError
from trainhooks._store._admit import (
    admit_sequence,
    admit_sizes,
    admit_tensors,
    admit_tree,
    checked_metadata,
)
from trainhooks._store._durable import (
    BACKGROUND_CHUNK,
    exchange_paths,
    fsync_directory,
    write_new_file,
)
from trainhooks._store._faults import fault_point
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import (
    DATA_FILE,
    MANIFEST_FILE,
    committed_path,
    deleting_name,
    staging_name,
)
from trainhooks._store._manifest import Manifest, TensorRecord
from trainhooks._store._safetensors import HeaderEntry, build_header

__all__ = ["TensorSource", "commit_checkpoint"]


@dataclass(frozen=True)
class TensorSource:
    """A tensor ready to be written: its bytes as a flat ``uint8`` memoryview, no copy made."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    data: memoryview

    @property
    def nbytes(self) -> int:
        return self.data.nbytes


def commit_checkpoint(
    directory: Path,
    basename: str,
    step: int,
    tensors: Sequence[TensorSource],
    tree: Any,
    metadata: dict[str, Any],
    *,
    when: float | None = None,
    retention: dict[str, Any] | None = None,
    sequence: int = 0,
    cancel: threading.Event | None = None,
) -> CheckpointInfo:
    """Write and durably commit a checkpoint of ``tensors`` + ``tree`` at ``step``.

    ``when`` is the wall time recorded (default: now); ``retention`` is stored as is in the
    manifest for the saver that writes after this one; ``sequence`` is the commit's number
    in its directory (the writer's; 0 records none); once ``cancel`` is set, the save
    stops before its commit point.
    """
    when = time.time() if when is None else when
    planned, header = _admitted_plan(step, when, tensors, tree, metadata, retention, sequence)
    staging = directory / staging_name(basename, step)
    final = committed_path(directory, basename, step)
    replaced: Path | None = None
    try:
        os.mkdir(staging)
        manifest, manifest_size = _write_contents(staging, planned, header, tensors, cancel)
        fault_point("before_dir_fsync")
        fsync_directory(staging)
        fault_point("before_rename")
        _check_cancel(cancel)
        replaced = _rename_into_place(staging, final, basename, step)  # the commit point
    except BaseException as exc:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        if not isinstance(exc, OSError):
            raise  # e.g. KeyboardInterrupt: nothing is left behind
        raise CheckpointWriteError(
            f"could not save the checkpoint of step {step} in {directory}: "
            f"{exc.strerror or exc} ({exc.filename or staging}); committed checkpoints are "
            "untouched",
            path=directory,
            step=step,
            errno=exc.errno,
        ) from exc
    finish_commit(directory, final, step, replaced)
    nbytes = manifest.nbytes + manifest_size
    return CheckpointInfo(
        step,
        final,
        manifest.time,
        nbytes,
        len(manifest.tensors),
        manifest.format_version,
        manifest.metadata,
        manifest.sequence,
    )


def _admitted_plan(
    step: int,
    when: float,
    tensors: Sequence[TensorSource],
    tree: Any,
    metadata: dict[str, Any],
    retention: dict[str, Any] | None,
    sequence: int,
) -> tuple[Manifest, bytes]:
    """The manifest to write (checksums still unknown) and the data file's header, after
    refusing anything a reader would refuse: nothing is on disk yet."""
    metadata = checked_metadata(metadata)
    admit_tensors((t.name, t.shape) for t in tensors)
    admit_tree(tree)
    admit_sequence(sequence)
    header, entries = build_header(
        [(t.name, t.dtype, t.shape, t.nbytes) for t in tensors],
        {"format": "pt", "producer": "trainhooks", "step": str(step)},
    )
    size = entries[-1].end if entries else len(header)
    files = {DATA_FILE: {"size": size, "header_size": len(header), "header_crc32c": _WIDEST}}
    records = [_record(entry, _WIDEST) for entry in entries]
    planned = Manifest(
        step, when, files, records, tree, metadata, retention=retention, sequence=sequence
    )
    try:
        bound = planned.size_bound()
    except (TypeError, ValueError) as exc:  # e.g. an int too long for JSON
        raise CheckpointFormatError(
            f"cannot save the state of step {step}: it does not serialize as JSON ({exc})"
        ) from None
    admit_sizes(len(header), bound)
    return planned, header


_WIDEST = 2**32 - 1  # a placeholder checksum as wide as any real one


def _write_contents(
    staging: Path,
    planned: Manifest,
    header: bytes,
    tensors: Sequence[TensorSource],
    cancel: threading.Event | None,
) -> tuple[Manifest, int]:
    """Write the data file, then the manifest (``planned`` with the real checksums)."""
    checksums = _write_data_file(staging / DATA_FILE, header, tensors, cancel)
    fault_point("after_data_file")
    files = {DATA_FILE: {**planned.files[DATA_FILE], "header_crc32c": crc32c.crc32c(header)}}
    records = [
        dataclasses.replace(record, crc32c=crc)
        for record, crc in zip(planned.tensors, checksums, strict=True)
    ]
    manifest = dataclasses.replace(planned, files=files, tensors=records)
    fault_point("before_manifest")
    manifest_bytes = manifest.to_bytes()
    write_new_file(staging / MANIFEST_FILE, [memoryview(manifest_bytes)])
    return manifest, len(manifest_bytes)


def _record(entry: HeaderEntry, checksum: int) -> TensorRecord:
    return TensorRecord(
        entry.name, DATA_FILE, entry.dtype, entry.shape, entry.begin, entry.end, checksum
    )


def _write_data_file(
    path: Path, header: bytes, tensors: Sequence[TensorSource], cancel: threading.Event | None
) -> list[int]:
    """Stream the header and every tensor's bytes, returning each tensor's crc32c.

    The checksums are computed over the very buffers being written, on a second thread
    (crc32c releases the GIL), so they cost no time next to the writes.
    """
    parts = [memoryview(header), *(tensor.data for tensor in tensors)]
    checksums = _Checksums(tensors)
    try:
        if cancel is None:
            write_new_file(path, parts)
        else:
            write_new_file(path, _cancellable(parts, cancel), BACKGROUND_CHUNK)
    except BaseException:
        checksums.stop()  # report a write error without waiting for every checksum
        raise
    return checksums.result()


class _Checksums:
    """The crc32c of each tensor, computed on a thread of its own while the file is written.

    A plain thread rather than an executor: a background save still running when the
    interpreter exits must finish, and ``concurrent.futures`` refuses new work by then.
    Where no thread can be started at all, the checksums are computed at the end instead.
    """

    def __init__(self, tensors: Sequence[TensorSource]) -> None:
        self._tensors = tensors
        self._values: list[int] = []
        self._error: BaseException | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = threading.Thread(
            target=self._compute, name="trainhooks-crc", daemon=True
        )
        try:
            self._thread.start()
        except RuntimeError:  # e.g. "can't create new thread at interpreter shutdown"
            self._thread = None

    def _compute(self) -> None:
        try:
            for tensor in self._tensors:
                if self._stopping.is_set():
                    return
                self._values.append(crc32c.crc32c(tensor.data))
        except BaseException as exc:  # raised on the writing thread by result()
            self._error = exc

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def result(self) -> list[int]:
        if self._thread is None:
            self._compute()
        else:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._values


def _cancellable(parts: list[memoryview], cancel: threading.Event) -> Iterator[memoryview]:
    """``parts`` in ``BACKGROUND_CHUNK`` slices (no copy), checking ``cancel`` before each."""
    for part in parts:
        for start in range(0, max(part.nbytes, 1), BACKGROUND_CHUNK):
            _check_cancel(cancel)
            yield part[start : start + BACKGROUND_CHUNK]


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise OSError(errno.ECANCELED, "the save was cancelled before its commit point")


def _rename_into_place(staging: Path, final: Path, basename: str, step: int) -> Path | None:
    """The commit point. Re-saving a step swaps the new checkpoint in atomically, so the step
    is never missing, not even for an instant; returns where the old copy now is."""
    if not os.path.lexists(final):
        os.rename(staging, final)
        return None
    if exchange_paths(staging, final):
        return staging  # the old checkpoint now lives under the staging name
    # No atomic exchange here: move the old copy aside, and put it back if the rename fails.
    aside = final.parent / deleting_name(basename, step)
    os.rename(final, aside)
    try:
        os.rename(staging, final)
    except BaseException:
        os.rename(aside, final)
        raise
    return aside


def finish_commit(directory: Path, final: Path, step: int, replaced: Path | None) -> None:
    """After the rename: fsync the parent so the commit survives a power loss, then remove
    the checkpoint a re-save replaced. A failing fsync is reported as committed."""
    try:
        fault_point("after_rename")
        fault_point("before_parent_fsync")
        fsync_directory(directory)
    except OSError as exc:
        raise CheckpointWriteError(
            f"the checkpoint of step {step} is committed at {final}, but the fsync of "
            f"{directory} failed ({exc.strerror or exc}): it may not survive a power loss",
            path=directory,
            step=step,
            errno=exc.errno,
            committed=True,
        ) from exc
    finally:
        if replaced is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(replaced)
