"""A ``StorageWriter``/``StorageReader`` pair for ``torch.distributed.checkpoint`` (DCP) that
writes and reads this project's format.

DCP plans (which process writes which chunk, how a saved chunk maps onto a differently
sharded target); this store does what DCP does not: every process writes one safetensors
shard file in a shared staging directory and fsyncs it, checksumming each chunk; the
coordinator writes a manifest naming every shard's chunks with their crc32c and commits with
the same rename + fsync protocol as a single-process save. For a URL each process uploads
its shard object and the manifest's exclusive create commits (``_store/_remote/_sharded``).
The reader is in ``_reader.py``. Non-tensor values go through the
project's JSON tree encoder, DCP's metadata becomes the manifest's tree: no pickle is
written or read (``DefaultSavePlanner.resolve_data`` would ``torch.save`` such values; this
writer asks the planner for the object itself instead).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch.distributed as dist
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex
from torch.distributed.checkpoint.planner import (
    SavePlan,
    SavePlanner,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import StorageWriter, WriteResult
from torch.futures import Future

from trainhooks._dist._metadata import chunk_name, tree_from_metadata
from trainhooks._dist._reader import ShardedReader
from trainhooks._exceptions import CheckpointFormatError
from trainhooks._state._adapters._torch import ADAPTER
from trainhooks._state._encode import encode_state
from trainhooks._store._commit import TensorSource
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import DEFAULT_BASENAME, check_basename
from trainhooks._store._manifest import TensorRecord
from trainhooks._store._remote._sharded import ShardedUpload, upload_shard
from trainhooks._store._remote._url import ObjectPath, checkpoint_location
from trainhooks._store._sharded import (
    ShardFile,
    commit_staged,
    discard_staging,
    shard_file_name,
    stage,
    write_shard,
)
from trainhooks._store._sharing import WriterLease, open_writer
from trainhooks._store._writer import RetentionRecord, retention_policy

__all__ = ["ShardedReader", "ShardedWriter"]


@dataclasses.dataclass(frozen=True)
class _Assignment:
    """What the coordinator tells each process: where to write, under which file name.

    ``staging`` is the staging directory, or for object storage (``remote``) the URL of
    the checkpoint's prefix, with the ``storage_options`` every rank connects with."""

    staging: str
    file: str
    remote: bool = False
    storage_options: dict[str, Any] | None = None


class ShardedWriter(StorageWriter):
    """Write a DCP save as the committed checkpoint of ``step`` in ``directory``.

    Every rank passes an equal writer to ``torch.distributed.checkpoint.save``; the
    coordinator (rank 0) is the directory's writer for the save (its lock, shared with the
    process's ``Saver``s of that directory, and its retention: ``max_to_keep`` and
    ``keep_checkpoint_every_n_hours`` as in ``Saver``, victims deleted once the new
    checkpoint is durable), unless ``lock`` is False because its caller already holds the
    lock (``retention`` is then the record to store as given). The committed checkpoint's
    facts are in :attr:`info` on the coordinator once ``save`` returns; :attr:`stage` says
    how far this rank got (``"plan"``, ``"written"``, ``"committed"``).

    ``directory`` may be a URL (``s3://bucket/prefix``): the coordinator then holds the
    prefix's lease, every rank uploads its shard object and the manifest's exclusive
    create commits (``_store/_remote/_sharded.py``); the coordinator's
    ``storage_options`` reach every rank with the plan.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        step: int,
        *,
        basename: str = DEFAULT_BASENAME,
        metadata: dict[str, Any] | None = None,
        lock: bool = True,
        retention: dict[str, Any] | None = None,
        max_to_keep: int | None = None,
        keep_checkpoint_every_n_hours: float = 10000.0,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        self.directory = checkpoint_location(directory)
        self.storage_options = storage_options
        self.step = step
        self.basename = check_basename(basename)
        self.metadata = dict(metadata or {})
        self.retention = retention
        self.policy = retention_policy(max_to_keep, keep_checkpoint_every_n_hours)
        self.info: CheckpointInfo | None = None
        self.stage = "plan"
        self._lock_wanted = lock
        self._lease: WriterLease | None = None
        self._upload: ShardedUpload | None = None  # a URL's coordinator side
        self._staging: Path | None = None
        self._assignment: _Assignment | None = None
        self._rank = 0

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        if checkpoint_id is not None:
            self.directory = checkpoint_location(checkpoint_id)
        self.info = None
        self.stage = "plan"
        self._assignment = None

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return True

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self.is_coordinator = is_coordinator
        self._rank = kwargs.get("rank", dist.get_rank() if dist.is_initialized() else 0)

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        """On the coordinator: become the directory's writer (lock, crashed saves' leftovers
        cleared, retention recovered), stage."""
        if isinstance(self.directory, ObjectPath):
            return self._plan_upload(plans)
        if self._lock_wanted and self._lease is None:
            # Opening the writer cleans the leftovers; a writer this process already holds
            # did so when it opened (and may have a background save staged right now).
            self._lease = open_writer(self.directory, self.basename, self.policy, self.step)
        self._staging = stage(self.directory, self.basename, self.step)
        world = len(plans)
        return [
            dataclasses.replace(
                plan, storage_data=_Assignment(str(self._staging), shard_file_name(rank, world))
            )
            for rank, plan in enumerate(plans)
        ]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        assignment = plan.storage_data
        if not isinstance(assignment, _Assignment):
            raise CheckpointFormatError("ShardedWriter got a plan its coordinator did not assign")
        sources: list[TensorSource] = []
        values: dict[int, tuple[Any, Any, list[str]]] = {}
        for position, item in enumerate(plan.items):
            fqn = item.index.fqn
            if item.type == WriteItemType.BYTE_IO:
                tree, tensors = encode_state({fqn: _lookup(planner, item.index)})
                values[position] = (item, tree["items"][0][1], [t.name for t in tensors])
                sources.extend(tensors)
                continue
            tensor = planner.resolve_data(item)
            name = chunk_name(fqn, item.tensor_data.chunk.offsets if item.tensor_data else ())
            code, shape, view = ADAPTER.array_bytes(tensor, name)
            sources.append(TensorSource(name, code, shape, view))
        if assignment.remote:
            shard = upload_shard(
                assignment.staging,
                assignment.file,
                self.step,
                sources,
                assignment.storage_options,
            )
        else:
            shard = write_shard(Path(assignment.staging), assignment.file, self.step, sources)
        self.stage = "written"
        by_name = {record.name: record for record in shard.records}
        results = []
        for position, item in enumerate(plan.items):
            if position in values:
                _, node, names = values[position]
                data: dict[str, Any] = {
                    "node": node,
                    "tensors": [by_name[n].to_json() for n in names],
                }
            else:
                name = chunk_name(item.index.fqn, item.tensor_data.chunk.offsets)  # type: ignore[union-attr]
                data = {"tensors": [by_name[name].to_json()]}
            size = sum(r["offsets"][1] - r["offsets"][0] for r in data["tensors"])
            results.append(WriteResult(item.index, size, {"shard": shard.name, **data}))
        results.append(WriteResult(_SHARD_INDEX, 0, {"shard_file": shard.to_json()}))
        future: Future[list[WriteResult]] = Future()
        future.set_result(results)
        return future

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        """On the coordinator: write the manifest of every shard and commit."""
        if self._upload is not None:
            self._commit_upload(metadata, results)
            return
        staging, directory = self._staging, self.directory
        assert staging is not None and isinstance(directory, Path)
        try:
            shards, values = _gather(results)
            tree = tree_from_metadata(metadata, values)

            def write(plan: RetentionRecord | None, when: float | None) -> CheckpointInfo:
                return commit_staged(
                    directory,
                    self.basename,
                    self.step,
                    staging,
                    shards,
                    tree,
                    self.metadata,
                    retention=self.retention if plan is None else plan.to_json(),
                    sequence=None if plan is None else plan.sequence,
                    when=when,
                )

            if self._lease is None:
                self.info = write(None, None)
            else:
                self.info = self._lease.commit_with(self.step, write)
            self.stage = "committed"
        except BaseException:
            discard_staging(staging)
            raise
        finally:
            self.release()

    def abandon(self) -> None:
        """After a failed collective: on the coordinator, remove the staging directory of a
        save that did not commit and give the directory back. Safe on every rank."""
        if self._upload is not None and self.info is None:
            self._upload.discard()
        if self._staging is not None and self.info is None:
            discard_staging(self._staging)
        self.release()

    def release(self) -> None:
        """Give the directory's writer back (also done by ``finish``); safe to call twice."""
        if self._lease is not None:
            self._lease.close()
            self._lease = None
        if self._upload is not None:
            self._upload.close()
            self._upload = None

    def _plan_upload(self, plans: list[SavePlan]) -> list[SavePlan]:
        """:meth:`prepare_global_plan` for a URL: the lease (or the caller's), then each
        rank's shard object in the checkpoint's prefix."""
        if self._upload is None:
            self._upload = ShardedUpload(
                str(self.directory),
                self.basename,
                self.step,
                self.policy,
                self.storage_options,
                lock=self._lock_wanted,
            )
        prefix = self._upload.prefix_url
        return [
            dataclasses.replace(
                plan, storage_data=_Assignment(prefix, name, True, self.storage_options)
            )
            for plan, name in zip(plans, self._upload.shard_names(len(plans)), strict=True)
        ]

    def _commit_upload(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        """:meth:`finish` for a URL: the manifest's exclusive create commits."""
        upload = self._upload
        assert upload is not None
        try:
            shards, values = _gather(results)
            tree = tree_from_metadata(metadata, values)
            self.info = upload.commit(shards, tree, self.metadata, self.retention)
            self.stage = "committed"
        except BaseException:
            upload.discard()
            raise
        finally:
            self.release()

    def storage_meta(self) -> Any:
        return None


_SHARD_INDEX_FQN = "\x00trainhooks.shard"  # a result carrying the shard file's description
_SHARD_INDEX = MetadataIndex(_SHARD_INDEX_FQN)


def _lookup(planner: SavePlanner, index: Any) -> Any:
    lookup = getattr(planner, "lookup_object", None)
    if lookup is None:
        raise CheckpointFormatError(
            f"cannot save {index.fqn!r} without pickle: planner {type(planner).__name__} has no "
            "lookup_object(); use DefaultSavePlanner or a subclass of it"
        )
    return lookup(index)


def _gather(results: list[list[WriteResult]]) -> tuple[list[ShardFile], dict[str, Any]]:
    shards: list[ShardFile] = []
    values: dict[str, Any] = {}
    for rank_results in results:
        for result in rank_results:
            data = result.storage_data
            if result.index.fqn == _SHARD_INDEX_FQN:
                raw = data["shard_file"]
                records = [_record(r) for r in raw["tensors"]]
                shards.append(ShardFile(raw["name"], raw["info"], records))
            elif "node" in data:
                values[result.index.fqn] = data["node"]
    return shards, values


def _record(raw: dict[str, Any]) -> TensorRecord:
    begin, end = raw["offsets"]
    return TensorRecord(
        raw["name"], raw["file"], raw["dtype"], tuple(raw["shape"]), begin, end, raw["crc32c"]
    )
