"""Committing one checkpoint to object storage, where nothing can be renamed.

1. upload the data object under a name unique to this attempt (multipart, parts in
   parallel, straight from tensor memory), computing each tensor's crc32c meanwhile;
2. verify it arrived whole (its listed size);
3. create the manifest **last**, with an exclusive create: its existence is the commit.
A failure before 3 deletes the data object (the next writer cleans it if we die first)
and raises :class:`CheckpointWriteError`; committed checkpoints are untouched.
Re-saving a committed step removes its old manifest just before creating the new one,
then the old data: a crash in that instant loses that step's older copy only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Sequence
from typing import Any

import crc32c

from trainhooks._exceptions import CheckpointWriteError
from trainhooks._store._admit import checked_metadata
from trainhooks._store._commit import TensorSource, _admitted_plan, _Checksums
from trainhooks._store._faults import fault_point
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import MANIFEST_FILE
from trainhooks._store._manifest import Manifest, TensorRecord
from trainhooks._store._remote._layout import checkpoint_prefix, data_object_name
from trainhooks._store._remote._objects import ObjectStore, check_cancel
from trainhooks._store._remote._url import ObjectPath
from trainhooks._store._safetensors import build_header

__all__ = ["upload_checkpoint"]


def upload_checkpoint(
    objects: ObjectStore,
    url: str,
    root: str,
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
    """Upload and commit a checkpoint of ``tensors`` + ``tree`` at ``step`` under ``root``
    (the path of ``url`` in ``objects``); ``sequence`` is the commit's number in its prefix
    (the lease holder's; 0 records none); once ``cancel`` is set (a background save being
    cancelled), the save stops before its next request and before its commit point."""
    when = time.time() if when is None else when
    # Refuse what a reader would refuse before uploading anything (the same admission as
    # a local commit: limits, plain-JSON metadata, the manifest's size).
    _admitted_plan(step, when, tensors, tree, metadata, retention, sequence)
    metadata = checked_metadata(metadata)
    prefix = checkpoint_prefix(root, basename, step)
    data_path = f"{prefix}/{data_object_name()}"
    try:
        skeleton = Manifest(
            step, when, {}, [], tree, metadata, retention=retention, sequence=sequence
        )
        manifest = _upload_data(objects, data_path, skeleton, tensors, cancel)
        fault_point("remote_before_manifest")
        body = manifest.to_bytes()
        check_cancel(cancel)
        _create_manifest(objects, prefix, body)  # the commit point
    except BaseException as exc:
        _forget(objects, data_path)
        if not isinstance(exc, Exception):
            raise
        raise _write_error(exc, url, step) from exc
    fault_point("remote_after_manifest")
    name = prefix.rpartition("/")[2]
    return CheckpointInfo(
        step,
        ObjectPath(url) / name,
        manifest.time,
        manifest.nbytes + len(body),
        len(manifest.tensors),
        manifest.format_version,
        manifest.metadata,
        manifest.sequence,
    )


def _upload_data(
    objects: ObjectStore,
    path: str,
    skeleton: Manifest,
    tensors: Sequence[TensorSource],
    cancel: threading.Event | None,
) -> Manifest:
    """Upload the safetensors data object and return the manifest describing it; each
    tensor's crc32c is computed on another thread over the very buffers being sent."""
    header, entries = build_header(
        [(t.name, t.dtype, t.shape, t.nbytes) for t in tensors],
        {"format": "pt", "producer": "trainhooks", "step": str(skeleton.step)},
    )
    checksums = _Checksums(tensors)
    try:
        sent = objects.upload(path, [memoryview(header), *(t.data for t in tensors)], cancel)
    except BaseException:
        checksums.stop()
        raise
    crcs = checksums.result()
    fault_point("remote_after_data")
    size = entries[-1].end if entries else len(header)
    listed = objects.list(path.rpartition("/")[0]).get(path)
    if sent != size or listed != size:
        raise OSError(f"{path} has {listed} bytes after its upload, {size} were sent")
    name = path.rpartition("/")[2]
    files = {
        name: {"size": size, "header_size": len(header), "header_crc32c": crc32c.crc32c(header)}
    }
    records = [
        TensorRecord(e.name, name, e.dtype, e.shape, e.begin, e.end, crc)
        for e, crc in zip(entries, crcs, strict=True)
    ]
    return dataclasses.replace(skeleton, files=files, tensors=records)


def _create_manifest(objects: ObjectStore, prefix: str, body: bytes) -> None:
    """Create the manifest exclusively; a committed copy of the same step is replaced."""
    path = f"{prefix}/{MANIFEST_FILE}"
    try:
        objects.create(path, body)
        return
    except FileExistsError:
        pass
    old = [p for p in objects.list(prefix) if p != path]
    objects.delete([path])  # re-saving a step: the old copy's manifest goes first
    objects.create(path, body)
    new_data = Manifest.from_bytes(body).files
    objects.delete([p for p in old if p.rpartition("/")[2] not in new_data])


def _forget(objects: ObjectStore, path: str) -> None:
    with contextlib.suppress(Exception):
        objects.delete([path])


def _write_error(exc: Exception, url: str, step: int) -> CheckpointWriteError:
    if isinstance(exc, CheckpointWriteError):
        return exc
    errno = exc.errno if isinstance(exc, OSError) else None
    cause = (exc.strerror if isinstance(exc, OSError) else None) or f"{type(exc).__name__}: {exc}"
    return CheckpointWriteError(
        f"could not save the checkpoint of step {step} in {url}: {cause}; committed "
        "checkpoints are untouched",
        path=url,
        step=step,
        errno=errno,
    )
