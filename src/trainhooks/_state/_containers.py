"""Containers that restore as the caller's own types: named tuples and other tuple
subclasses, dataclasses, and a framework's container nodes (JAX pytree nodes: equinox
modules, flax structs, ``jax.tree_util.register_*`` types).

A *record* is a container saved through its named children: a dataclass by its fields, a
pytree node by the children its framework flattens it into (its static parts are not
state and are not saved). A restore into a target keeps the target's containers: mutable
ones are refilled in place (dicts, lists, dataclasses that are not frozen), immutable ones
are rebuilt from the target's own type (tuples, named tuples, frozen dataclasses, pytree
nodes) and the parent holds the new one. The type always comes from the target: a class
name saved in the checkpoint is information only, so restoring never imports anything by a
name read from a file, and without a target a record comes back as a dict of its children.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from trainhooks._state._adapters._registry import loaded_adapters

__all__ = ["Children", "Rebuild", "class_name", "rebuild_tuple", "record_of", "target_record"]

Children = list[tuple[str | int, Any]]  # a record's children, each with its name
Rebuild = Callable[[list[Any]], Any]  # restored children (in order) -> the rebuilt container


def class_name(value: object) -> str:
    """``module.QualName`` of a value's type, as the checkpoint records it for information."""
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_dataclass_instance(value: object) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def record_of(value: object) -> Children | None:
    """The named children of ``value`` if it is saved as a record, else None; a
    framework's node first (an equinox module is also a dataclass, but its static fields
    are structure, not state)."""
    for adapter in loaded_adapters():
        children = adapter.node_children(value)
        if children is not None:
            return children
    if _is_dataclass_instance(value):
        return [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]  # type: ignore[arg-type]
    return None


def target_record(target: object) -> tuple[Children, Rebuild] | None:
    """The children of a target a record is restored into, and how to rebuild the target
    from its restored children (given in the same order); None if it is no record."""
    for adapter in loaded_adapters():
        nodes = adapter.node_children(target)
        if nodes is not None:
            return nodes, functools.partial(adapter.rebuild_node, target)
    if _is_dataclass_instance(target):
        names = [f.name for f in dataclasses.fields(target)]  # type: ignore[arg-type]
        fields: Children = [(name, getattr(target, name)) for name in names]
        return fields, functools.partial(_rebuild_dataclass, target, names)
    return None


def _rebuild_dataclass(target: Any, names: list[str], values: list[Any]) -> Any:
    """A dataclass filled in place, or, when frozen, a shallow copy with new field values
    (set as its own ``__init__`` would, so ``__post_init__`` and validation do not rerun)."""
    params = getattr(type(target), "__dataclass_params__", None)
    if params is not None and params.frozen:
        rebuilt = copy.copy(target)
        for name, value in zip(names, values, strict=True):
            object.__setattr__(rebuilt, name, value)
        return rebuilt
    for name, value in zip(names, values, strict=True):
        setattr(target, name, value)
    return target


def rebuild_tuple(target: tuple[Any, ...], items: list[Any]) -> tuple[Any, ...]:
    """A tuple of ``target``'s own type holding ``items``: a named tuple through its
    ``_make``, another tuple subclass (``torch.Size``) through its constructor."""
    cls = type(target)
    if cls is tuple:
        return tuple(items)
    make = getattr(cls, "_make", None)
    if hasattr(cls, "_fields") and callable(make):
        rebuilt: tuple[Any, ...] = make(items)
        return rebuilt
    return cls(items)
