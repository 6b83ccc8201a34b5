"""A distributed session's checkpoint read back in the user's own layout, without torch.

Such a checkpoint keeps its replicated entries (and the chief's hooks' states) as an
encoded tree plus named tensors (``_dist/_state_dict.py``); ``trainhooks.load`` unfolds
them here, so that ``load`` gives ``{"model": {...}, "optim": {...}}`` whether one process
or many wrote the checkpoint.
"""

from __future__ import annotations

import json
from typing import Any

from trainhooks._exceptions import CheckpointFormatError
from trainhooks._state._decode import decode_tree, to_plain
from trainhooks._state._reserved import DIST_HOOKS_ENTRY, DIST_REPLICATED_ENTRY

__all__ = ["unfold_distributed"]


def unfold_distributed(plain: dict[str, Any]) -> dict[str, Any]:
    """``plain`` (what ``load`` read) with the encoded entries put back in place."""
    if not isinstance(plain.get(DIST_REPLICATED_ENTRY), dict):
        return plain
    result = {k: v for k, v in plain.items() if k not in (DIST_REPLICATED_ENTRY, DIST_HOOKS_ENTRY)}
    result.update(_unfold(plain[DIST_REPLICATED_ENTRY]))
    if isinstance(plain.get(DIST_HOOKS_ENTRY), dict):
        result.update(_unfold(plain[DIST_HOOKS_ENTRY]))
    return result


def _unfold(entry: dict[str, Any]) -> dict[str, Any]:
    tensors = entry.get("tensors", {})
    try:
        tree = json.loads(entry["tree"])
        unfolded = to_plain(decode_tree(tree, lambda name, kind: tensors[name]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointFormatError(f"a malformed distributed session entry ({exc!r})") from exc
    if not isinstance(unfolded, dict):
        raise CheckpointFormatError("a distributed session entry does not hold a mapping")
    return unfolded
