"""The writer's admission check: before anything is written, refuse what a reader would refuse.

A save that returns must be loadable, so the writer applies exactly the limits of
``_limits`` that every reader applies, and refuses any input JSON cannot hold as written
(non-str keys, NaN, objects), with a ``CheckpointFormatError`` that names the offending
path and the limit. Nothing here touches the disk.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from trainhooks._exceptions import CheckpointFormatError
from trainhooks._store._limits import (
    MAX_HEADER_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_SEQUENCE,
    count_problem,
    depth_problem,
    json_depth,
    name_problem,
    rank_problem,
    size_problem,
)

__all__ = ["admit_sequence", "admit_sizes", "admit_tensors", "admit_tree", "checked_metadata"]

_PLAIN_JSON = (
    "metadata must be plain JSON: str keys; str, int, finite float, bool, None, and lists "
    "and dicts of them (convert values such as NumPy scalars with float() or int())"
)


def checked_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The caller's metadata as a dict, refused unless it is plain JSON within the limits.

    Walks the value iteratively (no recursion, whatever its depth) and names the first
    offending position, e.g. ``metadata['history'][3]``.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise CheckpointFormatError(f"cannot save metadata: it is a {type(metadata).__name__}")
    metadata = dict(metadata)
    stack: list[tuple[Any, tuple[Any, ...], int]] = [(metadata, (), 1)]
    while stack:
        value, path, depth = stack.pop()
        problem = depth_problem(depth) or _plain_problem(value)
        if problem is not None:
            raise CheckpointFormatError(f"cannot save {_where(path)}: {problem}; {_PLAIN_JSON}")
        if isinstance(value, dict):
            for key, child in value.items():
                if not isinstance(key, str):
                    raise CheckpointFormatError(
                        f"cannot save {_where(path)}: its key {key!r} is a "
                        f"{type(key).__name__}; {_PLAIN_JSON}"
                    )
                stack.append((child, (*path, key), depth + 1))
        elif isinstance(value, (list, tuple)):
            stack.extend((child, (*path, i), depth + 1) for i, child in enumerate(value))
    return metadata


def _plain_problem(value: Any) -> str | None:
    if value is None or isinstance(value, (str, bool, int, dict, list, tuple)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} is not a finite number"
    return f"values of type {type(value).__qualname__} are not JSON"


def _where(path: tuple[Any, ...], keep: int = 6) -> str:
    """``metadata['a'][0]``, shortened in the middle when very deep."""
    parts = [f"[{part!r}]" for part in path]
    if len(parts) > 2 * keep:
        parts = [*parts[:keep], f"...({len(parts) - 2 * keep} more)...", *parts[-keep:]]
    return "metadata" + "".join(parts)


def admit_tensors(tensors: Iterable[tuple[str, Sequence[int]]]) -> None:
    """Refuse tensors (``(name, shape)``; a name is the tensor's path) past the limits."""
    count = 0
    for name, shape in tensors:
        count += 1
        problem = name_problem(name) or rank_problem(len(shape))
        if problem is not None:
            raise CheckpointFormatError(f"cannot save the state: {problem}")
    problem = count_problem(count)
    if problem is not None:
        raise CheckpointFormatError(f"cannot save the state: {problem}")


def admit_tree(tree: Any) -> None:
    """Refuse a state tree nested deeper than readers accept (checked without recursion)."""
    problem = depth_problem(json_depth(tree))
    if problem is not None:
        raise CheckpointFormatError(f"cannot save the state: its tree {problem}")


def admit_sequence(sequence: int) -> None:
    """Refuse a commit number readers would refuse (only a forged manifest in the
    directory, claiming the largest one, can lead a writer there)."""
    if not 0 <= sequence <= MAX_SEQUENCE:
        raise CheckpointFormatError(
            f"cannot save: commit number {sequence} is past {MAX_SEQUENCE}; a checkpoint in "
            "this directory claims an impossible sequence (`trainhooks ls --json` shows it)"
        )


def admit_sizes(header_bytes: int, manifest_bytes: int) -> None:
    """Refuse a header or manifest larger than readers accept (``manifest_bytes`` is an
    upper bound: every checksum counted at its widest)."""
    problem = size_problem("safetensors header", header_bytes, MAX_HEADER_BYTES) or size_problem(
        "manifest", manifest_bytes, MAX_MANIFEST_BYTES
    )
    if problem is not None:
        raise CheckpointFormatError(
            f"cannot save the state: {problem}; store fewer or smaller entries, or move large "
            "values out of the metadata into tensors"
        )
