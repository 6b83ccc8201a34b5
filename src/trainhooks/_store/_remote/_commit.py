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
from trainhooks._store._sharded import ShardFile

__all__ = ["create_manifest", "forget", "upload_checkpoint", "upload_data", "write_error"]


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
        shard = upload_data(objects, data_path, step, tensors, cancel)
        manifest = Manifest(
            step,
            when,
            {shard.name: shard.info},
            shard.records,
            tree,
            metadata,
            retention=retention,
            sequence=sequence,
        )
        fault_point("remote_before_manifest")
        body = manifest.to_bytes()
        check_cancel(cancel)
        create_manifest(objects, prefix, body)  # the commit point
    except BaseException as exc:
        forget(objects, [data_path])
        if not isinstance(exc, Exception):
            raise
        raise write_error(exc, url, step) from exc
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


def upload_data(
    objects: ObjectStore,
    path: str,
    step: int,
    tensors: Sequence[TensorSource],
    cancel: threading.Event | None = None,
) -> ShardFile:
    """Upload ``tensors`` as the safetensors data object ``path`` and describe it (its
    size, header checksum and a record per tensor, each tensor's crc32c computed on
    another thread over the very buffers being sent); its listed size is checked after
    the upload. A failure may leave a part of the object: the caller deletes it."""
    header, entries = build_header(
        [(t.name, t.dtype, t.shape, t.nbytes) for t in tensors],
        {"format": "pt", "producer": "trainhooks", "step": str(step)},
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
    info = {"size": size, "header_size": len(header), "header_crc32c": crc32c.crc32c(header)}
    records = [
        TensorRecord(e.name, name, e.dtype, e.shape, e.begin, e.end, crc)
        for e, crc in zip(entries, crcs, strict=True)
    ]
    return ShardFile(name, info, records)


def create_manifest(objects: ObjectStore, prefix: str, body: bytes) -> None:
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


def forget(objects: ObjectStore, paths: Sequence[str]) -> None:
    """Delete the data objects of a save that did not commit, as far as possible (the
    next writer deletes what is left)."""
    with contextlib.suppress(Exception):
        objects.delete(paths)


def write_error(exc: Exception, url: str, step: int) -> CheckpointWriteError:
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
