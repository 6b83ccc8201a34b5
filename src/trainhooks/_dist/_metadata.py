"""DCP's checkpoint metadata as this project's JSON tree, and back: never pickle.

The manifest's tree nests every saved entry at its original path in the state dict (DCP's
``planner_data``), so ``trainhooks.load`` gives the user's structure. A tensor is a
``sharded`` node (dtype, full shape, its chunks by tensor name and offsets); any other value
is the existing tree encoding of it. Both carry ``fqn``, the flat key DCP plans with.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)

from trainhooks._exceptions import CheckpointCorruptError
from trainhooks._state._adapters._torch import CODE_BY_TORCH, TORCH_BY_CODE
from trainhooks._store._manifest import TensorRecord

__all__ = ["chunk_name", "leaves", "metadata_from_tree", "tree_from_metadata"]


def chunk_name(fqn: str, offsets: Any) -> str:
    """The stored name of the chunk of ``fqn`` starting at ``offsets``."""
    return f"{fqn}[{','.join(str(int(o)) for o in offsets)}]"


def tree_from_metadata(metadata: Metadata, values: dict[str, Any]) -> dict[str, Any]:
    """The manifest tree of a DCP save: ``values`` holds each non-tensor entry's encoded node."""
    paths = metadata.planner_data if isinstance(metadata.planner_data, dict) else {}
    root: dict[Any, Any] = {}
    for fqn, storage in metadata.state_dict_metadata.items():
        if isinstance(storage, TensorStorageMetadata):
            node = _sharded_node(fqn, storage)
        else:
            node = {**values[fqn], "fqn": fqn}
        path = tuple(paths.get(fqn, (fqn,))) or (fqn,)
        if not _insert(root, path, _Leaf(node)):
            root[fqn] = _Leaf(node)  # a path that collides with another keeps its flat name
    tree = _dict_node(root)
    tree["dcp"] = {"version": metadata.version}
    return tree


def _sharded_node(fqn: str, storage: TensorStorageMetadata) -> dict[str, Any]:
    code = CODE_BY_TORCH[storage.properties.dtype]
    chunks = [
        {"name": chunk_name(fqn, chunk.offsets), "offsets": [int(o) for o in chunk.offsets]}
        for chunk in storage.chunks
    ]
    return {
        "type": "sharded",
        "fqn": fqn,
        "dtype": code,
        "shape": [int(d) for d in storage.size],
        "chunks": chunks,
    }


class _Leaf:
    """A saved entry while the nesting is built (a plain dict is a level of the path)."""

    def __init__(self, node: dict[str, Any]) -> None:
        self.node = node


def _insert(root: dict[Any, Any], path: tuple[Any, ...], leaf: _Leaf) -> bool:
    level = root
    for key in path[:-1]:
        child = level.setdefault(key, {})
        if not isinstance(child, dict):
            return False
        level = child
    if path[-1] in level:
        return False
    level[path[-1]] = leaf
    return True


def _dict_node(level: dict[Any, Any]) -> dict[str, Any]:
    items = [[k, v.node if isinstance(v, _Leaf) else _dict_node(v)] for k, v in level.items()]
    return {"type": "dict", "items": items}


def leaves(
    tree: Any, path: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every saved entry of a DCP checkpoint's tree with its path in the state dict."""
    if not isinstance(tree, dict):
        raise ValueError(f"malformed tree node {str(tree)[:80]!r}")
    if "fqn" in tree:
        yield path, tree
        return
    if tree.get("type") != "dict":
        raise ValueError(f"not a checkpoint written through DCP (a {tree.get('type')!r} node)")
    for key, child in tree["items"]:
        yield from leaves(child, (*path, key))


def metadata_from_tree(
    tree: Any, records: dict[str, TensorRecord], where: str
) -> tuple[Metadata, dict[str, dict[str, Any]]]:
    """DCP's ``Metadata`` of a checkpoint, and the value node of each non-tensor entry."""
    entries: dict[str, Any] = {}
    planner_data: dict[str, tuple[Any, ...]] = {}
    storage_data: dict[MetadataIndex, str] = {}
    values: dict[str, dict[str, Any]] = {}
    try:
        for path, node in leaves(tree):
            fqn = str(node["fqn"])
            planner_data[fqn] = path
            if node.get("type") != "sharded":
                entries[fqn] = BytesStorageMetadata()
                values[fqn] = node
                storage_data[MetadataIndex(fqn)] = fqn
                continue
            chunks = []
            for chunk in node["chunks"]:
                record = records[chunk["name"]]
                offsets = torch.Size(chunk["offsets"])
                chunks.append(ChunkStorageMetadata(offsets, torch.Size(record.shape)))
                storage_data[MetadataIndex(fqn, offsets)] = chunk["name"]
            properties = TensorProperties(dtype=TORCH_BY_CODE[node["dtype"]])
            entries[fqn] = TensorStorageMetadata(properties, torch.Size(node["shape"]), chunks)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointCorruptError(
            f"checkpoint {where} has a malformed distributed state tree: {exc!r}", path=where
        ) from exc
    version = tree.get("dcp", {}).get("version") if isinstance(tree, dict) else None
    metadata = Metadata(entries, planner_data=planner_data, storage_data=storage_data)
    if isinstance(version, str):
        metadata.version = version
    return metadata, values
