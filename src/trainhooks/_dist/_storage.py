"""A ``StorageWriter``/``StorageReader`` pair for ``torch.distributed.checkpoint`` (DCP) that
writes and reads this project's format.

DCP plans (which process writes which chunk, how a saved chunk maps onto a differently
sharded target); this store does what DCP does not: every process writes one safetensors
shard file in a shared staging directory and fsyncs it, checksumming each chunk; the
coordinator writes a manifest naming every shard's chunks with their crc32c and commits with
the same rename + fsync protocol as a single-process save. Non-tensor values go through the
project's JSON tree encoder, DCP's metadata becomes the manifest's tree: no pickle is
written or read (``DefaultSavePlanner.resolve_data`` would ``torch.save`` such values; this
writer asks the planner for the object itself instead).
"""

from __future__ import annotations

import dataclasses
import os
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed._shard._utils import narrow_tensor_by_index
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    SavePlan,
    SavePlanner,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from trainhooks._dist._metadata import chunk_name, metadata_from_tree, tree_from_metadata
from trainhooks._exceptions import CheckpointFormatError
from trainhooks._state._adapters._registry import new_array
from trainhooks._state._adapters._torch import ADAPTER, TORCH_BY_CODE
from trainhooks._state._decode import decode_tree
from trainhooks._state._encode import encode_state
from trainhooks._store._commit import TensorSource
from trainhooks._store._faults import fault_point
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import DEFAULT_BASENAME, check_basename
from trainhooks._store._manifest import TensorRecord
from trainhooks._store._reader import CheckpointReader
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
    """What the coordinator tells each process: where to write, under which file name."""

    staging: str
    file: str


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
    ) -> None:
        super().__init__()
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        self.directory = Path(directory)
        self.step = step
        self.basename = check_basename(basename)
        self.metadata = dict(metadata or {})
        self.retention = retention
        self.policy = retention_policy(max_to_keep, keep_checkpoint_every_n_hours)
        self.info: CheckpointInfo | None = None
        self.stage = "plan"
        self._lock_wanted = lock
        self._lease: WriterLease | None = None
        self._staging: Path | None = None
        self._assignment: _Assignment | None = None
        self._rank = 0

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        if checkpoint_id is not None:
            self.directory = Path(checkpoint_id)
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
        staging = self._staging
        assert staging is not None
        try:
            shards, values = _gather(results)
            tree = tree_from_metadata(metadata, values)

            def write(plan: RetentionRecord | None, when: float | None) -> CheckpointInfo:
                return commit_staged(
                    self.directory,
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
        if self._staging is not None and self.info is None:
            discard_staging(self._staging)
        self.release()

    def release(self) -> None:
        """Give the directory's writer back (also done by ``finish``); safe to call twice."""
        if self._lease is not None:
            self._lease.close()
            self._lease = None

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


class ShardedReader(StorageReader):
    """Read a checkpoint of this project's format through DCP's planners (any world size,
    any sharding), verifying every chunk's crc32c before its bytes reach a tensor.

    ``path`` is one committed checkpoint directory. A checkpoint written by one process
    (``Saver``) is not a DCP checkpoint: read those with ``Saver.restore``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self._reader: CheckpointReader | None = None
        self._values: dict[str, dict[str, Any]] = {}
        self._verified: set[str] = set()
        self._read = False

    @property
    def collective(self) -> str:
        """The exchange this rank is in or was last in (named by a collective's failure)."""
        if self._read:
            return "the exchange confirming every rank read its chunks"
        return "the exchange of load plans (before any chunk was read)"

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        if checkpoint_id is not None:
            self.path = Path(checkpoint_id)
        self._read = False
        self.close()

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return True

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._verified.clear()

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        reader = self._open()
        records = {record.name: record for record in reader.manifest.tensors}
        metadata, self._values = metadata_from_tree(reader.manifest.tree, records, str(self.path))
        return metadata

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        self.storage_data = metadata.storage_data

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        fault_point("before_shard_read")
        reader = self._open()
        records = {record.name: record for record in reader.manifest.tensors}
        for item in plan.items:
            if item.type == LoadItemType.BYTE_IO:
                _set_value(planner, item.dest_index.fqn, self._value(reader, records, item))
                continue
            name = self.storage_data[item.storage_index]
            record = records[name]
            view = reader.mapped_view(record, verify=name not in self._verified)
            self._verified.add(name)
            saved = _as_tensor(view, record)
            source = narrow_tensor_by_index(saved, item.storage_offsets, item.lengths)
            target = planner.resolve_tensor(item).detach()
            if target.size() != source.size():
                raise CheckpointFormatError(
                    f"{self.path}: chunk {name!r} does not fit its target "
                    f"({tuple(source.size())} vs {tuple(target.size())})"
                )
            target.copy_(source)
            planner.commit_tensor(item, target)
        self._read = True
        future: Future[None] = Future()
        future.set_result(None)
        return future

    def _open(self) -> CheckpointReader:
        if self._reader is None:
            self._reader = CheckpointReader(self.path)
        return self._reader

    def _value(self, reader: CheckpointReader, records: dict[str, TensorRecord], item: Any) -> Any:
        node = self._values[item.storage_index.fqn]

        def read_tensor(name: str, kind: str) -> Any:
            record = records[name]
            return new_array(record.dtype, record.shape, kind, partial(reader.read_into, record))

        return decode_tree(node, read_tensor)


def _as_tensor(view: memoryview, record: TensorRecord) -> torch.Tensor:
    dtype = TORCH_BY_CODE[record.dtype]
    if not view.nbytes:
        return torch.empty(record.shape, dtype=dtype)
    return torch.frombuffer(view, dtype=dtype).reshape(record.shape)


def _set_value(planner: LoadPlanner, fqn: str, value: Any) -> None:
    """Put a decoded value where ``DefaultLoadPlanner.load_bytes`` would, without its
    ``torch.load`` (pickle)."""
    if not isinstance(planner, DefaultLoadPlanner):
        raise CheckpointFormatError(
            f"cannot load {fqn!r} without pickle: planner {type(planner).__name__} would "
            "unpickle it; use DefaultLoadPlanner or a subclass of it"
        )
    if planner.flatten_state_dict:
        set_element(planner.original_state_dict, planner.mappings[fqn], value)
    else:
        planner.state_dict[fqn] = value
