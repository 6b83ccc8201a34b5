"""Turning a checkpoint's JSON tree back into values: fresh arrays read (and verified) from
the store, plain Python values, and markers for objects that restore through
``load_state_dict``. Nothing is applied to the caller's objects here (see ``_apply``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainhooks._exceptions import CheckpointFormatError
from trainhooks._state._adapters._registry import adapter_for, is_framework

__all__ = ["GeneratorValue", "StatefulValue", "decode_tree"]

ReadTensor = Callable[[str, str], Any]  # (tensor name, kind) -> fresh verified array


@dataclass
class StatefulValue:
    """A saved ``state_dict()``; restored by calling the target's ``load_state_dict``."""

    cls: str
    state: Any


@dataclass
class GeneratorValue:
    """A saved random generator state; ``kind`` is the tree node type it came from."""

    kind: str
    state: Any


def decode_tree(node: Any, read_tensor: ReadTensor) -> Any:
    """Decode one tree node; tensors are read through ``read_tensor``."""
    if not isinstance(node, dict):
        raise CheckpointFormatError(f"malformed tree node {str(node)[:80]!r}")
    kind = node.get("type")
    if kind == "value":
        return node.get("value")
    if kind == "tensor":
        return read_tensor(node["name"], node.get("kind", "numpy"))
    if kind == "dict":
        return {_key(k): decode_tree(v, read_tensor) for k, v in node["items"]}
    if kind in ("list", "tuple"):
        items = [decode_tree(v, read_tensor) for v in node["items"]]
        return items if kind == "list" else tuple(items)
    if kind == "float":
        return float(_text(node, "value"))
    if kind == "bytes":
        try:
            return base64.b64decode(_text(node, "value"), validate=True)
        except binascii.Error as exc:
            raise CheckpointFormatError(f"a bytes value is not valid base64 ({exc})") from None
    if kind == "stateful":
        return StatefulValue(str(node.get("class")), decode_tree(node["state"], read_tensor))
    if isinstance(kind, str) and is_framework(kind):
        return _framework_node(kind, node, read_tensor)
    raise CheckpointFormatError(f"unknown tree node type {str(kind)[:80]!r}")


def _text(node: dict[str, Any], key: str) -> str:
    value = node.get(key)
    if not isinstance(value, str):
        raise CheckpointFormatError(f"a {node.get('type')} node's {key!r} is not a string")
    return value


def _framework_node(kind: str, node: dict[str, Any], read_tensor: ReadTensor) -> Any:
    """A framework's generator (restored later, into its target) or named value (a torch
    dtype: its name as a string where the framework is not in use, as for
    ``trainhooks.load``, which must not pull in a framework)."""
    if "state" in node:
        return GeneratorValue(kind, decode_tree(node["state"], read_tensor))
    text = _text(node, "value")
    adapter = adapter_for(kind)
    return text if adapter is None else adapter.decode_value(kind, text)


def _key(key: Any) -> str | int:
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise CheckpointFormatError(f"malformed dict key {key!r} in the checkpoint tree")
    return key


def to_plain(value: Any) -> Any:
    """Replace markers by their saved state: the form ``trainhooks.load`` returns."""
    if isinstance(value, (StatefulValue, GeneratorValue)):
        return to_plain(value.state)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(to_plain(v) for v in value)
    return value
