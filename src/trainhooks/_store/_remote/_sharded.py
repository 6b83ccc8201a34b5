"""Sharded checkpoints in object storage: every process uploads its own shard, one commit.

The counterpart of ``_store/_sharded.py``, split at the same points, with the single
process upload's pieces (``_commit.py``) in place of files and renames:

1. the coordinator takes the prefix's lease (``RemoteWriter``: leftovers of crashed
   writers deleted, retention recovered) and names each rank's data object,
   ``shard-<rank>-of-<world>-<32 hex>.safetensors``, unique to this attempt
   (:class:`ShardedUpload`);
2. every process uploads its tensors as that object into the checkpoint's prefix,
   checksummed as sent and its listed size checked after the upload
   (:func:`upload_shard`); a failed upload deletes its object;
3. the coordinator gathers the shards' descriptions and creates the manifest naming them
   all **last**, with an exclusive create: the commit point (:meth:`ShardedUpload.commit`).

A save that fails before 3 leaves no manifest; the coordinator deletes the shard objects
no manifest names (:meth:`ShardedUpload.discard`), or the next writer does. Nothing here
knows a framework or a process group: the caller moves the descriptions between processes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from trainhooks._exceptions import CheckpointError
from trainhooks._store._admit import (
    admit_sizes,
    admit_tensors,
)
from trainhooks._store._commit import TensorSource
from trainhooks._store._faults import fault_point
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import committed_name
from trainhooks._store._remote._commit import create_manifest, forget, upload_data, write_error
from trainhooks._store._remote._layout import shard_object_name
from trainhooks._store._remote._objects import ObjectStore, open_objects
from trainhooks._store._remote._reader import commits_newest_first
from trainhooks._store._remote._url import ObjectPath
from trainhooks._store._remote._writer import RemoteWriter, clean_leftovers
from trainhooks._store._sharded import ShardFile, sharded_manifest
from trainhooks._store._writer import RetentionPolicy, RetentionRecord

__all__ = ["ShardedUpload", "upload_shard"]

Options = dict[str, Any] | None


def upload_shard(
    prefix_url: str, name: str, step: int, tensors: Sequence[TensorSource], options: Options
) -> ShardFile:
    """Upload one process's ``tensors`` as the data object ``name`` in the checkpoint
    prefix ``prefix_url`` (any rank); the object is deleted again if the upload fails.
    Tensors past the format's limits are refused before anything is sent."""
    admit_tensors((t.name, t.shape) for t in tensors)
    objects, prefix = open_objects(prefix_url, options)
    path = f"{prefix}/{name}"
    try:
        fault_point("remote_before_shard_upload")
        shard = upload_data(objects, path, step, tensors)
        admit_sizes(shard.info["header_size"], 0)
    except BaseException as exc:
        forget(objects, [path])
        if not isinstance(exc, Exception) or isinstance(exc, CheckpointError):
            raise
        raise write_error(exc, prefix_url.rpartition("/")[0], step) from exc
    fault_point("remote_after_shard_upload")
    return shard


class ShardedUpload:
    """The coordinator's side of one sharded save into ``url``.

    With ``lock`` it holds the prefix's lease (a ``RemoteWriter``, its retention
    ``policy`` applied at the commit) until :meth:`close`; without, its caller holds it
    (a ``Saver`` of this process) and passes the retention record to store.
    """

    def __init__(
        self,
        url: str,
        basename: str,
        step: int,
        policy: RetentionPolicy,
        options: Options,
        *,
        lock: bool,
    ) -> None:
        self.url, self.basename, self.step, self.options = url, basename, step, options
        self.writer = RemoteWriter(url, basename, policy, options) if lock else None
        self.objects: ObjectStore
        if self.writer is not None:
            self.objects, self.root = self.writer.objects, self.writer.root
        else:
            self.objects, self.root = open_objects(url, options)

    @property
    def prefix_url(self) -> str:
        """The URL of the checkpoint's prefix, where every rank uploads its shard."""
        return f"{self.url}/{committed_name(self.basename, self.step)}"

    def shard_names(self, world_size: int) -> list[str]:
        """Each rank's data object, unique to this attempt."""
        return [shard_object_name(rank, world_size) for rank in range(world_size)]

    def commit(
        self,
        shards: Sequence[ShardFile],
        tree: Any,
        metadata: dict[str, Any],
        retention: dict[str, Any] | None,
    ) -> CheckpointInfo:
        """Create the manifest of every shard, exclusively (the commit point); under the
        lease this commit carries the retention plan and its victims go afterwards."""

        def write(plan: RetentionRecord, when: float) -> CheckpointInfo:
            return self._create(shards, tree, metadata, plan.to_json(), plan.sequence, when)

        if self.writer is not None:
            return self.writer.commit_with(self.step, write)
        return self._create(shards, tree, metadata, retention, self._next_sequence(), None)

    def discard(self) -> None:
        """After a failed save: delete the shard objects no manifest names (every rank's,
        which this process cannot name: a listing finds them) and pending uploads."""
        with contextlib.suppress(Exception):  # the next writer deletes what is left
            clean_leftovers(self.objects, self.root, self.basename)

    def close(self) -> None:
        """Release the lease if this upload took it; safe to call twice."""
        if self.writer is not None:
            self.writer.close()

    def _next_sequence(self) -> int:
        """The number after the highest commit's (the caller holds the lease)."""
        commits = commits_newest_first(
            self.objects, self.url, self.root, self.basename, self.options
        )
        numbers = [c.reader.manifest.sequence or 0 for c in commits if c.reader is not None]
        return max(numbers, default=0) + 1

    def _create(
        self,
        shards: Sequence[ShardFile],
        tree: Any,
        metadata: dict[str, Any],
        retention: dict[str, Any] | None,
        sequence: int,
        when: float | None,
    ) -> CheckpointInfo:
        prefix = f"{self.root}/{committed_name(self.basename, self.step)}"
        try:
            manifest, body = sharded_manifest(
                self.step,
                shards,
                tree,
                metadata,
                self.url,
                retention=retention,
                sequence=sequence,
                when=when,
            )
            fault_point("remote_before_manifest")
            create_manifest(self.objects, prefix, body)  # the commit point
        except BaseException as exc:
            # Every shard of the attempt (the listing finds them); one a manifest names
            # stays: a create whose answer was lost may have committed all the same.
            self.discard()
            if not isinstance(exc, Exception) or isinstance(exc, CheckpointError):
                raise
            raise write_error(exc, self.url, self.step) from exc
        fault_point("remote_after_manifest")
        return CheckpointInfo(
            self.step,
            ObjectPath(self.url) / committed_name(self.basename, self.step),
            manifest.time,
            manifest.nbytes + len(body),
            len(manifest.tensors),
            manifest.format_version,
            manifest.metadata,
            manifest.sequence,
        )
