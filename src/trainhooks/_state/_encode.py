"""Turning a state mapping into a JSON tree plus named tensors, ready for the store.

Every leaf becomes a JSON node; arrays become ``{"type": "tensor", "name": ...}`` nodes whose
bytes go to the safetensors file. Objects with ``state_dict()`` are stored through it, so
nothing is ever pickled. Dict keys keep their type (str or int: optimizer state uses ints).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

from trainhooks._exceptions import CheckpointFormatError
from trainhooks._state._adapters._base import ArrayAdapter
from trainhooks._state._adapters._registry import adapter_of, loaded_adapters
from trainhooks._store._commit import TensorSource
from trainhooks._store._limits import count_problem, depth_problem, name_problem, rank_problem

__all__ = ["encode_state", "is_stateful", "where"]


def is_stateful(value: Any) -> bool:
    """Objects that save and load themselves through ``state_dict``/``load_state_dict``."""
    return callable(getattr(value, "state_dict", None)) and callable(
        getattr(value, "load_state_dict", None)
    )


def encode_state(state: Mapping[str, Any]) -> tuple[dict[str, Any], list[TensorSource]]:
    """The JSON tree of ``state`` and the tensors it references, in a stable order."""
    if not isinstance(state, Mapping):
        raise CheckpointFormatError(
            f"state must be a mapping of names to objects, got {type(state).__name__}; "
            "wrap it, e.g. {'model': model}"
        )
    encoder = _Encoder()
    return encoder.encode(state, ()), encoder.tensors


class _Encoder:
    def __init__(self) -> None:
        self.tensors: list[TensorSource] = []
        self._names: set[str] = {"__metadata__"}  # reserved by the safetensors header

    def encode(self, value: Any, path: tuple[Any, ...], depth: int = 1) -> dict[str, Any]:
        """The node of ``value``, which sits at JSON level ``depth`` of the tree; each node
        reaches one level deeper (its scalars), a container's children further."""
        _refuse(path, depth_problem(depth + 1))
        array = adapter_of(value)
        if array is not None:
            return self._tensor(value, *array, path)
        if value is None or isinstance(value, (bool, int, str)):
            return {"type": "value", "value": value}
        if isinstance(value, float):
            if math.isfinite(value):
                return {"type": "value", "value": value}
            return {"type": "float", "value": repr(value)}
        if isinstance(value, Mapping):
            pairs = [self._item(k, v, path, depth) for k, v in value.items()]
            return {"type": "dict", "items": pairs}
        if isinstance(value, (list, tuple)):
            items = [self.encode(v, (*path, i), depth + 2) for i, v in enumerate(value)]
            return {"type": "list" if isinstance(value, list) else "tuple", "items": items}
        if isinstance(value, (bytes, bytearray)):
            return {"type": "bytes", "value": base64.b64encode(value).decode()}
        return self._special(value, path, depth)

    def _special(self, value: Any, path: tuple[Any, ...], depth: int) -> dict[str, Any]:
        for adapter in loaded_adapters():
            generator = adapter.generator_state(value)
            if generator is not None:
                node_type, state = generator
                return {"type": node_type, "state": self.encode(state, path, depth + 1)}
            named = adapter.value_name(value)
            if named is not None:
                return {"type": named[0], "value": named[1]}
        if is_stateful(value):
            cls = type(value)
            return {
                "type": "stateful",
                "class": f"{cls.__module__}.{cls.__qualname__}",
                "state": self.encode(value.state_dict(), path, depth + 1),
            }
        raise CheckpointFormatError(
            f"cannot checkpoint {where(path)}: values of type {type(value).__qualname__} are "
            "not supported (no pickle is used). Store arrays, numbers, strings, None, "
            "dicts/lists/tuples of them, or an object with state_dict()/load_state_dict()."
        )

    def _item(self, key: Any, value: Any, path: tuple[Any, ...], depth: int) -> list[Any]:
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise CheckpointFormatError(
                f"cannot checkpoint {where(path)}: dict key {key!r} is a "
                f"{type(key).__name__}; only str and int keys are supported"
            )
        return [key, self.encode(value, (*path, key), depth + 3)]  # node, items, pair

    def _tensor(
        self, value: Any, adapter: ArrayAdapter, kind: str, path: tuple[Any, ...]
    ) -> dict[str, Any]:
        dtype, shape, data = adapter.array_bytes(value, where(path))
        name = self._unique_name(path)
        _refuse(path, name_problem(name) or rank_problem(len(shape)))
        _refuse(path, count_problem(len(self.tensors) + 1))
        self.tensors.append(TensorSource(name, dtype, shape, data))
        return {"type": "tensor", "name": name, "kind": kind}

    def _unique_name(self, path: tuple[Any, ...]) -> str:
        base = "/".join(str(part) for part in path) or "tensor"
        name, n = base, 1
        while name in self._names:
            n += 1
            name = f"{base}#{n}"
        self._names.add(name)
        return name


def _refuse(path: tuple[Any, ...], problem: str | None) -> None:
    """Raise for a value past a limit every reader enforces (``_store._limits``)."""
    if problem is not None:
        raise CheckpointFormatError(f"cannot checkpoint {where(path)}: {problem}")


def where(path: tuple[Any, ...]) -> str:
    """How a position in the state reads in an error message: ``state['model']['w']``."""
    return "state" + "".join(f"[{part!r}]" for part in path)
