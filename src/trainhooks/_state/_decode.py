"""Turning a checkpoint's JSON tree back into values: fresh arrays read (and verified) from
the store, plain Python values, and markers for objects that restore through
``load_state_dict``. Nothing is applied to the caller's objects here (see ``_apply``).

No class is ever imported by a name read from the file: records (dataclasses, pytree nodes)
decode as ``RecordValue`` markers that become the target's own type on restore, or a dict
without one. Of the class names a checkpoint notes, only two built-in ones are rebuilt
without a target: ``collections.OrderedDict`` and ``bytearray``.
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainhooks._exceptions import CheckpointFormatError
from trainhooks._state._adapters._registry import adapter_for, is_framework, new_array

__all__ = [
    "CallableValue",
    "GeneratorValue",
    "RecordValue",
    "StatefulValue",
    "decode_tree",
    "select_entries",
    "tensor_names",
    "to_plain",
]

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


@dataclass
class RecordValue:
    """A saved record (a dataclass or pytree node's children by name); restored into the
    target's own type, or as a dict of its children where there is none."""

    cls: str
    items: dict[str | int, Any]


@dataclass
class CallableValue:
    """A callable inside a record, saved by name only: the target's own is kept."""

    name: str


_REBUILT: dict[str, Callable[[Any], Any]] = {
    "collections.OrderedDict": OrderedDict,
    "builtins.bytearray": bytearray,
}


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
        items = {_key(k): decode_tree(v, read_tensor) for k, v in node["items"]}
        return _REBUILT[node["class"]](items) if node.get("class") in _REBUILT else items
    if kind in ("list", "tuple"):
        values = [decode_tree(v, read_tensor) for v in node["items"]]
        return values if kind == "list" else tuple(values)
    if kind == "float":
        return float(_text(node, "value"))
    if kind == "bytes":
        try:
            data = base64.b64decode(_text(node, "value"), validate=True)
        except binascii.Error as exc:
            raise CheckpointFormatError(f"a bytes value is not valid base64 ({exc})") from None
        return _REBUILT[node["class"]](data) if node.get("class") in _REBUILT else data
    if kind == "stateful":
        return StatefulValue(str(node.get("class")), decode_tree(node["state"], read_tensor))
    if kind == "record":
        items = {_key(k): decode_tree(v, read_tensor) for k, v in node["items"]}
        return RecordValue(str(node.get("class")), items)
    if kind == "callable":
        return CallableValue(str(node.get("name")))
    if kind == "sharded":
        return _assemble(node, read_tensor)
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


def _assemble(node: dict[str, Any], read_tensor: ReadTensor) -> Any:
    """A tensor saved in chunks by several processes, as one full NumPy array (the form
    ``trainhooks.load`` returns; restoring onto processes goes through DCP's planners)."""
    shape = tuple(int(d) for d in node["shape"])
    full = new_array(str(node["dtype"]), shape, "numpy", lambda view: None)
    covered = 0
    for chunk in node["chunks"]:
        part = read_tensor(chunk["name"], "numpy")
        offsets = [int(o) for o in chunk["offsets"]]
        if len(offsets) != len(shape) or part.ndim != len(shape):
            raise CheckpointFormatError(f"chunk {chunk['name']!r} does not match shape {shape}")
        full[tuple(slice(o, o + n) for o, n in zip(offsets, part.shape, strict=True))] = part
        covered += part.size
    if covered != full.size:
        raise CheckpointFormatError(
            f"the chunks of {node.get('fqn')!r} cover {covered} of its {full.size} elements"
        )
    return full


def select_entries(node: Any, keep: Callable[[str | int], bool]) -> Any:
    """A state's top-level mapping node with only the entries whose key ``keep`` accepts
    (a restore of part of a state reads the tensors of that part only); any other node
    as is."""
    if (
        isinstance(node, dict)
        and node.get("type") == "dict"
        and isinstance(node.get("items"), list)
    ):
        items = [
            item
            for item in node["items"]
            if not (isinstance(item, list) and len(item) == 2) or keep(_key(item[0]))
        ]  # a malformed item is kept, for decode_tree to report
        node = {**node, "items": items}
    return node


def tensor_names(node: Any) -> list[str]:
    """The names of the tensors a tree node reads, in order (its tensors' and chunks')."""
    names: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            named = isinstance(item.get("name"), str)
            if named and (item.get("type") == "tensor" or "offsets" in item):  # or a chunk
                names.append(item["name"])
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return names


def _key(key: Any) -> str | int:
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise CheckpointFormatError(f"malformed dict key {key!r} in the checkpoint tree")
    return key


def to_plain(value: Any) -> Any:
    """Replace markers by their saved state: the form ``trainhooks.load`` returns (a
    record as a dict of its children, a callable inside one as None)."""
    if isinstance(value, (StatefulValue, GeneratorValue)):
        return to_plain(value.state)
    if isinstance(value, RecordValue):
        return to_plain(value.items)
    if isinstance(value, CallableValue):
        return None
    if isinstance(value, dict):
        plain = {k: to_plain(v) for k, v in value.items()}
        return OrderedDict(plain) if isinstance(value, OrderedDict) else plain
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(to_plain(v) for v in value)
    return value
