"""A session's state mapping as a DCP state dict, and a sharded checkpoint restored into it.

Two kinds of entries, saved in one collective checkpoint:

- **DCP-native entries** (:class:`ModelOptimizerState`, or any ``DistributedState``):
  FSDP2/DTensor state that only DCP's planners can reshard. DCP calls their
  ``state_dict()`` / ``load_state_dict()`` itself (the ``Stateful`` pattern DCP recommends).
- **Everything else** is taken to be replicated (a DDP model is the same on every rank) and
  goes through the single-process state layer: its JSON tree (one string value) plus its
  tensors by name, under ``"__trainhooks_state__"``. Every rank offers the same tensors, so
  DCP's deduplication writes each once; restoring reads them back whole on every rank and
  applies them with the same all-or-nothing checks as ``Saver.restore``.

The hooks' and listeners' states (``"__trainhooks__"``) are saved from the chief only, as a
single-process session saves only the chief's, under ``"__trainhooks_hooks__"``, and
restored on every rank (each rank loads the states of the hooks it has).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, MutableMapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from trainhooks._dist._api import load_sharded
from trainhooks._dist._open import Reader, open_checkpoint
from trainhooks._exceptions import CheckpointCorruptError, CheckpointFormatError
from trainhooks._state._adapters._registry import new_array
from trainhooks._state._adapters._torch import TORCH_BY_CODE
from trainhooks._state._apply import apply_state
from trainhooks._state._decode import decode_tree
from trainhooks._state._encode import encode_state
from trainhooks._state._mapped import MappedTensor
from trainhooks._state._reserved import DIST_HOOKS_ENTRY, DIST_REPLICATED_ENTRY, HOOK_STATE_KEY
from trainhooks._state._staging import StagingBuffers
from trainhooks._store._commit import TensorSource
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._remote._url import ObjectPath

__all__ = [
    "HOOKS_ENTRY",
    "REPLICATED_ENTRY",
    "DistributedState",
    "ModelOptimizerState",
    "is_dcp_checkpoint",
    "restore_sharded",
    "staged_replicated",
    "to_dcp_state",
]

REPLICATED_ENTRY = DIST_REPLICATED_ENTRY
HOOKS_ENTRY = DIST_HOOKS_ENTRY


class DistributedState:
    """Base of state entries that DCP saves and reshards itself (DTensor, FSDP2).

    A subclass implements ``state_dict()`` (a DCP state dict: DTensors, tensors, plain
    values) and ``load_state_dict(state_dict)``; a session saves it through DCP's planners
    instead of treating it as replicated.
    """

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        raise NotImplementedError


class ModelOptimizerState(DistributedState):
    """A model and its optimizer as one reshardable entry of a session's ``state``.

    ``state_dict()`` / ``load_state_dict()`` go through ``get_state_dict`` /
    ``set_state_dict``, so an FSDP2 (``fully_shard``) or DTensor model saved by N ranks
    restores onto M ranks; a plain or DDP model works the same way. ``optimizer`` may be
    None (the model alone).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        self.model = model
        self.optimizer = optimizer

    def state_dict(self) -> dict[str, Any]:
        if self.optimizer is None:
            model_sd, _ = get_state_dict(self.model, [])
            return {"model": model_sd}
        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        return {"model": model_sd, "optim": optim_sd}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        optimizers: Any = [] if self.optimizer is None else self.optimizer
        set_state_dict(
            self.model,
            optimizers,
            model_state_dict=state_dict["model"],
            optim_state_dict=state_dict.get("optim", {}),
        )


def _split(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """(DCP-native entries, replicated entries, the hooks' states or None)."""
    native, replicated, hooks = {}, {}, None
    for key in state:
        value = state[key]
        if key == HOOK_STATE_KEY:
            hooks = value
        elif isinstance(value, DistributedState):
            native[key] = value
        else:
            replicated[key] = value
    return native, replicated, hooks


def to_dcp_state(
    state: Mapping[str, Any], *, with_hooks: bool, replicated: bool = True
) -> dict[str, Any]:
    """The DCP state dict of a session's ``checkpoint_state`` (see the module docstring);
    ``with_hooks`` on the chief only; without ``replicated``, the replicated entry is left
    to :func:`staged_replicated`."""
    native, plain, hooks = _split(state)
    for key in (REPLICATED_ENTRY, HOOKS_ENTRY):
        if key in native:
            raise ValueError(f"state has an entry named {key!r}, which trainhooks reserves")
    result: dict[str, Any] = dict(native)
    if replicated:
        result[REPLICATED_ENTRY] = _encoded(plain)
    if with_hooks and hooks is not None:
        result[HOOKS_ENTRY] = _encoded({HOOK_STATE_KEY: hooks})
    return result


def staged_replicated(state: Mapping[str, Any], staging: StagingBuffers) -> dict[str, Any]:
    """The replicated entry of ``state`` as a snapshot: its arrays copied into ``staging``'s
    buffers (reused from the previous snapshot, so no memory is allocated or first-touched
    again), the tensors of the entry made over them without a copy."""
    plain = _split(state)[1]
    staging.begin()
    try:
        entry = _encoded(plain, staging)
    except BaseException:
        staging.abort()
        raise
    staging.finish()()  # copies from a device land before the write reads them
    return {REPLICATED_ENTRY: entry}


def _encoded(entries: Mapping[str, Any], staging: StagingBuffers | None = None) -> dict[str, Any]:
    tree, tensors = encode_state(entries, staging)
    return {"tree": json.dumps(tree), "tensors": {t.name: _as_torch(t) for t in tensors}}


def _as_torch(source: TensorSource) -> torch.Tensor:
    """A tensor over the bytes the state layer gives (a view of the caller's array)."""
    dtype = TORCH_BY_CODE[source.dtype]
    if not source.nbytes:
        return torch.empty(source.shape, dtype=dtype)
    with warnings.catch_warnings():  # a read-only view: DCP only reads it
        warnings.simplefilter("ignore", UserWarning)
        return torch.frombuffer(source.data, dtype=dtype).reshape(source.shape)


def is_dcp_checkpoint(path: Path | ObjectPath) -> bool:
    """Whether the checkpoint at ``path`` was written through DCP (else by one ``Saver``)."""
    with open_checkpoint(path, data_files=False, follow_symlinks=False) as reader:
        tree = reader.manifest.tree
    return isinstance(tree, dict) and "dcp" in tree


def restore_sharded(state: MutableMapping[str, Any], path: Path | ObjectPath) -> CheckpointInfo:
    """Restore a session's ``checkpoint_state`` from the DCP checkpoint at ``path`` on every
    rank (a collective: DCP loads the native entries), then the replicated entries and the
    hooks' states locally, every chunk verified; raises before changing a replicated entry
    that does not fit."""
    native, _, _ = _split(state)
    if native:
        load_sharded(dict(native), path)
    with open_checkpoint(path, follow_symlinks=False) as reader:
        info = reader.info
        saved = _read_encoded(reader, REPLICATED_ENTRY, required=True)
        hooks = _read_encoded(reader, HOOKS_ENTRY, required=False)
        if hooks is not None and HOOK_STATE_KEY in hooks:
            saved[HOOK_STATE_KEY] = hooks[HOOK_STATE_KEY]
        target = _ReplicatedView(state, set(native))
        apply_state(target, saved, strict=True, cast=False, optional=(HOOK_STATE_KEY,))
    return info


def _read_encoded(reader: Reader, entry: str, *, required: bool) -> Any:
    """Decode one ``_encoded`` entry of the checkpoint: its tree, with its tensors read
    whole (every chunk verified) and handed to ``apply_state`` as ``MappedTensor``s."""
    items = _top_items(reader)
    if entry not in items:
        if required:
            raise CheckpointFormatError(
                f"{reader.path} has no {entry!r} entry: not written by a distributed session; "
                "load it with trainhooks.load or load_sharded",
                path=reader.path,
            )
        return None
    records = {record.name: record for record in reader.manifest.tensors}

    def read_chunk(name: str, kind: str) -> Any:
        record = records[name]
        return new_array(record.dtype, record.shape, "numpy", partial(reader.read_into, record))

    try:
        node = decode_tree(items[entry], read_chunk)
        tree = json.loads(node["tree"])
        arrays: dict[str, np.ndarray] = node.get("tensors", {})
        codes = _codes(items[entry])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointCorruptError(
            f"checkpoint {reader.path} has a malformed {entry!r} entry ({exc})",
            path=reader.path,
            step=reader.step,
        ) from exc

    def read_tensor(name: str, kind: str) -> Any:
        shape = tuple(np.shape(arrays[name]))  # ascontiguousarray makes a 0-d array 1-d
        array = np.ascontiguousarray(arrays[name])
        data = memoryview(array.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
        return MappedTensor(codes[name], shape, kind, data)

    return decode_tree(tree, read_tensor)


def _top_items(reader: Reader) -> dict[str, Any]:
    tree = reader.manifest.tree
    if not isinstance(tree, dict) or tree.get("type") != "dict":
        raise CheckpointFormatError(f"{reader.path} is not a distributed checkpoint")
    return {str(key): node for key, node in tree["items"]}


def _codes(entry: dict[str, Any]) -> dict[str, str]:
    """Each saved tensor's dtype code, from the entry's ``sharded`` nodes."""
    for key, node in entry.get("items", []):
        if key == "tensors":
            return {str(k): str(n["dtype"]) for k, n in node.get("items", [])}
    return {}


class _ReplicatedView(MutableMapping[str, Any]):
    """The state without its DCP-native entries (DCP restored those)."""

    def __init__(self, state: MutableMapping[str, Any], native: set[str]) -> None:
        self._state = state
        self._native = native

    def __getitem__(self, key: str) -> Any:
        if key in self._native:
            raise KeyError(key)
        return self._state[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._state[key] = value

    def __delitem__(self, key: str) -> None:
        del self._state[key]

    def __iter__(self) -> Any:
        return (key for key in self._state if key not in self._native)

    def __len__(self) -> int:
        return sum(1 for _ in self)
