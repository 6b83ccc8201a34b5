"""Checkpoints written by several processes: one shard file per process, one commit.

The same protocol as ``_commit``, split at the points where processes meet: the coordinator
stages ``<name>.tmp-<uuid>`` (:func:`stage`); every process writes and fsyncs its own shard
file in it (:func:`write_shard`), checksumming the bytes as they are written; the
coordinator gathers every shard's description, writes the manifest last and renames the
staging directory into place (:func:`commit_staged`). Nothing here knows a framework or a
process group: the caller moves the descriptions between processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c

from trainhooks._exceptions import CheckpointWriteError
from trainhooks._store._admit import (
    admit_sequence,
    admit_sizes,
    admit_tensors,
    admit_tree,
    checked_metadata,
)
from trainhooks._store._commit import TensorSource, _rename_into_place, finish_commit
from trainhooks._store._durable import fsync_directory, write_new_file
from trainhooks._store._faults import fault_point
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import MANIFEST_FILE, committed_path, staging_name
from trainhooks._store._listing import next_sequence
from trainhooks._store._manifest import Manifest, TensorRecord
from trainhooks._store._safetensors import build_header

__all__ = [
    "ShardFile",
    "check_unique",
    "commit_staged",
    "discard_staging",
    "shard_file_name",
    "stage",
    "write_shard",
]


@dataclass(frozen=True)
class ShardFile:
    """What one process wrote: its file's name and facts, and a record per tensor."""

    name: str
    info: dict[str, int]  # {"size", "header_size", "header_crc32c"}
    records: list[TensorRecord]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "info": self.info,
            "tensors": [r.to_json() for r in self.records],
        }


def shard_file_name(rank: int, world_size: int) -> str:
    return f"shard-{rank:05d}-of-{world_size:05d}.safetensors"


def stage(directory: Path, basename: str, step: int) -> Path:
    """Create the staging directory of a save (and ``directory`` itself if needed)."""
    staging = directory / staging_name(basename, step)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        os.mkdir(staging)
    except OSError as exc:
        raise _write_error(exc, directory, step, staging) from exc
    return staging


def discard_staging(staging: Path) -> None:
    """Remove a staging directory after a failed save (leftovers are also cleaned at the next
    writer's start)."""
    with contextlib.suppress(OSError):
        shutil.rmtree(staging)


def write_shard(staging: Path, name: str, step: int, tensors: Sequence[TensorSource]) -> ShardFile:
    """Write one process's tensors as the safetensors file ``name`` in ``staging``, fsynced
    and closed before this returns; checksums are computed over the bytes being written.
    Tensors past the format's limits are refused before anything is written."""
    admit_tensors((t.name, t.shape) for t in tensors)
    header, entries = build_header(
        [(t.name, t.dtype, t.shape, t.nbytes) for t in tensors],
        {"format": "pt", "producer": "trainhooks", "step": str(step)},
    )
    admit_sizes(len(header), 0)
    fault_point("before_shard_write")
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainhooks-crc") as pool:
            checksums = [pool.submit(crc32c.crc32c, tensor.data) for tensor in tensors]
            try:
                write_new_file(
                    staging / name,
                    [memoryview(header), *(t.data for t in tensors)],
                    before_fsync="before_shard_fsync",
                )
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
            crcs = [future.result() for future in checksums]
    except OSError as exc:
        raise _write_error(exc, staging.parent, step, staging / name) from exc
    fault_point("after_shard_fsync")
    size = entries[-1].end if entries else len(header)
    info = {"size": size, "header_size": len(header), "header_crc32c": crc32c.crc32c(header)}
    records = [
        TensorRecord(e.name, name, e.dtype, e.shape, e.begin, e.end, crc)
        for e, crc in zip(entries, crcs, strict=True)
    ]
    return ShardFile(name, info, records)


def commit_staged(
    directory: Path,
    basename: str,
    step: int,
    staging: Path,
    shards: Sequence[ShardFile],
    tree: Any,
    metadata: dict[str, Any],
    *,
    retention: dict[str, Any] | None = None,
    sequence: int | None = None,
    when: float | None = None,
) -> CheckpointInfo:
    """Write the manifest of every shard last, fsync the staging directory, rename it into
    place (the commit point) and fsync ``directory``. On an error before the commit point
    (a checkpoint past the format's limits included) the staging directory is removed and
    committed checkpoints are untouched. ``sequence`` is the commit's number in the
    directory; by default the one after the highest there (the caller holds the lock);
    ``when`` the manifest's time (by default now)."""
    final = committed_path(directory, basename, step)
    replaced: Path | None = None
    try:
        number = next_sequence(directory, basename) if sequence is None else sequence
        manifest, data = sharded_manifest(
            step, shards, tree, metadata, directory, retention=retention, sequence=number, when=when
        )
        fault_point("before_manifest")
        write_new_file(staging / MANIFEST_FILE, [memoryview(data)])
        fault_point("before_dir_fsync")
        fsync_directory(staging)
        fault_point("before_rename")
        replaced = _rename_into_place(staging, final, basename, step)  # the commit point
    except BaseException as exc:
        discard_staging(staging)
        if isinstance(exc, OSError):
            raise _write_error(exc, directory, step, staging) from exc
        raise
    finish_commit(directory, final, step, replaced)
    nbytes = manifest.nbytes + len(data)
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


def sharded_manifest(
    step: int,
    shards: Sequence[ShardFile],
    tree: Any,
    metadata: dict[str, Any],
    where: Path | str,
    *,
    retention: dict[str, Any] | None,
    sequence: int,
    when: float | None,
) -> tuple[Manifest, bytes]:
    """The manifest of the checkpoint ``shards`` make up at ``step`` (in ``where``, a
    directory or URL named by errors) and its bytes, checked against the format's limits
    (the tensor count across all shards) before anything is committed."""
    records = [record for shard in shards for record in shard.records]
    check_unique(records, where, step)
    metadata = checked_metadata(metadata)
    admit_tensors((r.name, r.shape) for r in records)
    admit_tree(tree)
    admit_sequence(sequence)
    manifest = Manifest(
        step,
        time.time() if when is None else when,
        {shard.name: shard.info for shard in shards},
        records,
        tree,
        metadata,
        retention=retention,
        sequence=sequence,
    )
    body = manifest.to_bytes()
    admit_sizes(0, len(body))
    return manifest, body


def check_unique(records: Sequence[TensorRecord], directory: Path | str, step: int) -> None:
    """Refuse a chunk written by two processes (their plans overlapped)."""
    seen: set[str] = set()
    for record in records:
        if record.name in seen:
            raise CheckpointWriteError(
                f"two processes wrote tensor {record.name!r} for the checkpoint of step {step} "
                f"in {directory}; each chunk must be written by exactly one process",
                path=directory,
                step=step,
            )
        seen.add(record.name)


def _write_error(exc: OSError, directory: Path, step: int, where: Path) -> CheckpointWriteError:
    return CheckpointWriteError(
        f"could not save the checkpoint of step {step} in {directory}: "
        f"{exc.strerror or exc} ({exc.filename or where}); committed checkpoints are untouched",
        path=directory,
        step=step,
        errno=exc.errno,
    )
