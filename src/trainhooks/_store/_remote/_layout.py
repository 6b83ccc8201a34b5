"""Names in object storage: ``<root>/<basename>-<12 digits>/manifest.json`` commits a
checkpoint; its data object is ``tensors-<32 hex>.safetensors`` (one process's save) or
``shard-<rank>-of-<world>-<32 hex>.safetensors`` (each rank's of a sharded save), unique
per attempt, so a save never overwrites the bytes of a committed checkpoint;
``<root>/.trainhooks.lease`` is the single writer's lease. Cleanup removes only names of
exactly these shapes."""

from __future__ import annotations

import re
import uuid

from trainhooks._store._layout import MANIFEST_FILE, committed_name, parse_committed

__all__ = [
    "LEASE_OBJECT",
    "checkpoint_prefix",
    "data_object_name",
    "is_data_object",
    "shard_object_name",
    "split_object",
]

LEASE_OBJECT = ".trainhooks.lease"
_DATA_RE = re.compile(r"(tensors|shard-[0-9]{5}-of-[0-9]{5})-[0-9a-f]{32}\.safetensors")


def data_object_name() -> str:
    return f"tensors-{uuid.uuid4().hex}.safetensors"


def shard_object_name(rank: int, world_size: int) -> str:
    """The data object of ``rank``'s shard in one attempt of a sharded save."""
    return f"shard-{rank:05d}-of-{world_size:05d}-{uuid.uuid4().hex}.safetensors"


def is_data_object(name: str) -> bool:
    return _DATA_RE.fullmatch(name) is not None


def checkpoint_prefix(root: str, basename: str, step: int) -> str:
    return f"{root}/{committed_name(basename, step)}"


def split_object(root: str, path: str, basename: str) -> tuple[int, str] | None:
    """``(step, object name)`` of an object this library may have made inside a
    checkpoint prefix under ``root`` (a manifest or a data object), else None."""
    if not path.startswith(root + "/"):
        return None
    parts = path[len(root) + 1 :].split("/")
    if len(parts) != 2:
        return None
    step = parse_committed(parts[0], basename)
    if step is None or not (parts[1] == MANIFEST_FILE or is_data_object(parts[1])):
        return None
    return step, parts[1]
