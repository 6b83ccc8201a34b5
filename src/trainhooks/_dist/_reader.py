"""DCP's ``StorageReader`` for this project's format: a committed checkpoint (a directory
or a URL) read through DCP's planners, any world size and sharding, every chunk verified
against its crc32c before its bytes reach a tensor, and no pickle (``_storage.py`` has the
writer and the reasons)."""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import torch
from torch.distributed._shard._utils import narrow_tensor_by_index
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner
from torch.distributed.checkpoint.storage import StorageReader
from torch.futures import Future

from trainhooks._dist._metadata import metadata_from_tree
from trainhooks._dist._open import Reader, open_checkpoint
from trainhooks._exceptions import CheckpointFormatError
from trainhooks._state._adapters._registry import new_array
from trainhooks._state._adapters._torch import TORCH_BY_CODE
from trainhooks._state._decode import decode_tree
from trainhooks._store._faults import fault_point
from trainhooks._store._manifest import TensorRecord
from trainhooks._store._remote._url import checkpoint_location

__all__ = ["ShardedReader"]


class ShardedReader(StorageReader):
    """Read a checkpoint of this project's format through DCP's planners (any world size,
    any sharding), verifying every chunk's crc32c before its bytes reach a tensor.

    ``path`` is one committed checkpoint directory, or its URL (``s3://...``; fsspec gets
    ``storage_options``): each rank then downloads the byte ranges of its chunks only. A
    checkpoint written by one process (``Saver``) is not a DCP checkpoint: read those with
    ``Saver.restore``.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, storage_options: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.path = checkpoint_location(path)
        self.storage_options = storage_options
        self._reader: Reader | None = None
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
            self.path = checkpoint_location(checkpoint_id)
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
        needed = [
            records[self.storage_data[item.storage_index]]
            for item in plan.items
            if item.type != LoadItemType.BYTE_IO
        ]
        prefetch = getattr(reader, "prefetch", None)  # object storage: parallel range reads
        if prefetch is not None:
            prefetch(list({record.name: record for record in needed}.values()))
        views: dict[str, memoryview] = {}  # a chunk several targets read is fetched once
        for item in plan.items:
            if item.type == LoadItemType.BYTE_IO:
                _set_value(planner, item.dest_index.fqn, self._value(reader, records, item))
                continue
            name = self.storage_data[item.storage_index]
            record = records[name]
            if name not in views:
                views[name] = reader.mapped_view(record, verify=name not in self._verified)
            view = views[name]
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

    def _open(self) -> Reader:
        if self._reader is None:
            self._reader = open_checkpoint(self.path, self.storage_options)
        return self._reader

    def _value(self, reader: Reader, records: dict[str, TensorRecord], item: Any) -> Any:
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
