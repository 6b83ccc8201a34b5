"""One entry of a saved state tree, with its tensors named as the entry's own state names them.

An export of only the model should be loadable by the model itself:
``model.load_state_dict(safetensors.torch.load_file(path))``. In a checkpoint the model's
tensors are named by their path in the whole state (``model/fc.weight``); relative to the
entry ``model`` they are ``fc.weight``, the keys of ``model.state_dict()``. The path of an
entry is written as ``show`` prints names: keys joined by ``/`` (``"model"``,
``"nets/generator"``). An object saved through ``state_dict()`` adds no level of its own,
so its keys come right after its entry's path.
"""

from __future__ import annotations

from typing import Any

from trainhooks._exceptions import StateMismatchError
from trainhooks._store._export import ExportSelection

__all__ = ["select_entry"]


def select_entry(tree: Any, only: str) -> ExportSelection:
    """The tensors under the entry ``only`` of ``tree``, renamed relative to it.

    Raises ``StateMismatchError`` when the checkpoint has no such entry or it holds no
    tensor (the message lists the entries there are).
    """
    parts = only.split("/")
    if not only or "" in parts:
        raise ValueError(
            f"only must name an entry such as 'model' or 'nets/generator', got {only!r}"
        )
    node = tree
    for depth, part in enumerate(parts):
        children = _children(_unwrap(node))
        if part not in children:
            where = "/".join(parts[:depth]) or "the state"
            raise StateMismatchError(
                f"the checkpoint has no entry {'/'.join(parts[: depth + 1])!r}; the entries "
                f"of {where} are {sorted(children)}"
            )
        node = children[part]
    names: dict[str, str] = {}
    renamed = _rename(node, (), parts[-1], names)
    if not names:
        raise StateMismatchError(
            f"the checkpoint's entry {only!r} holds no tensor (only plain values, which a "
            "safetensors file cannot hold); name an entry with arrays, such as the model"
        )
    return ExportSelection(names, renamed, only)


def _unwrap(node: Any) -> Any:
    """Look through objects saved by ``state_dict()`` and generators to what they hold."""
    while isinstance(node, dict) and "state" in node and node.get("type") != "tensor":
        node = node["state"]
    return node


def _children(node: Any) -> dict[str, Any]:
    """A dict's or list's entries by the names ``show`` gives them (``str(key)``, index)."""
    if not isinstance(node, dict):
        return {}
    if node.get("type") == "dict":
        return {str(key): child for key, child in node.get("items", [])}
    if node.get("type") in ("list", "tuple"):
        return {str(i): child for i, child in enumerate(node.get("items", []))}
    return {}


def _rename(node: Any, path: tuple[str, ...], leaf: str, names: dict[str, str]) -> Any:
    """A copy of ``node`` whose tensors carry their path below the entry as names."""
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    if kind == "tensor":
        name = "/".join(path) or leaf  # the entry itself is one tensor: its own name
        if name in names.values():
            raise StateMismatchError(
                f"two tensors of the entry would both be named {name!r} in the export"
            )
        names[node["name"]] = name
        return {**node, "name": name}
    if kind == "dict":
        items = [[k, _rename(v, (*path, str(k)), leaf, names)] for k, v in node["items"]]
        return {**node, "items": items}
    if kind in ("list", "tuple"):
        items = [_rename(v, (*path, str(i)), leaf, names) for i, v in enumerate(node["items"])]
        return {**node, "items": items}
    if "state" in node:  # an object's state_dict or a generator: no level of its own
        return {**node, "state": _rename(node["state"], path, leaf, names)}
    return node
