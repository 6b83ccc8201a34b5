"""Turning a state mapping into a JSON tree plus named tensors, ready for the store.

Every leaf becomes a JSON node; arrays become ``{"type": "tensor", "name": ...}`` nodes whose
bytes go to the safetensors file. Objects with ``state_dict()`` are stored through it, so
nothing is ever pickled. Dict keys keep their type (str or int: optimizer state uses ints).

The tensors' bytes are views of the caller's arrays (a synchronous save writes them before
returning), or, given ``staging``, copies in staging buffers: the tree is built of fresh
JSON values either way, so the result is then a snapshot that later training cannot change.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

from trainhooks._exceptions import CheckpointFormatError
from trainhooks._state._adapters._base import ArrayAdapter
from trainhooks._state._adapters._registry import adapter_of, loaded_adapters
from trainhooks._state._staging import StagingBuffers
from trainhooks._store._commit import TensorSource

__all__ = ["encode_state", "is_stateful", "where"]


def is_stateful(value: Any) -> bool:
    """Objects that save and load themselves through ``state_dict``/``load_state_dict``."""
    return callable(getattr(value, "state_dict", None)) and callable(
        getattr(value, "load_state_dict", None)
    )


def encode_state(
    state: Mapping[str, Any], staging: StagingBuffers | None = None
) -> tuple[dict[str, Any], list[TensorSource]]:
    """The JSON tree of ``state`` and the tensors it references, in a stable order; with
    ``staging``, the tensors are copies in its buffers (see the module docstring)."""
    if not isinstance(state, Mapping):
        raise CheckpointFormatError(
            f"state must be a mapping of names to objects, got {type(state).__name__}; "
            "wrap it, e.g. {'model': model}"
        )
    encoder = _Encoder(staging)
    return encoder.encode(state, ()), encoder.tensors


class _Encoder:
    def __init__(self, staging: StagingBuffers | None) -> None:
        self.tensors: list[TensorSource] = []
        self._names: set[str] = {"__metadata__"}  # reserved by the safetensors header
        self._staging = staging

    def encode(self, value: Any, path: tuple[Any, ...]) -> dict[str, Any]:
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
            return {"type": "dict", "items": [self._item(k, v, path) for k, v in value.items()]}
        if isinstance(value, (list, tuple)):
            items = [self.encode(v, (*path, i)) for i, v in enumerate(value)]
            return {"type": "list" if isinstance(value, list) else "tuple", "items": items}
        if isinstance(value, (bytes, bytearray)):
            return {"type": "bytes", "value": base64.b64encode(value).decode()}
        return self._special(value, path)

    def _special(self, value: Any, path: tuple[Any, ...]) -> dict[str, Any]:
        for adapter in loaded_adapters():
            generator = adapter.generator_state(value)
            if generator is not None:
                node_type, state = generator
                return {"type": node_type, "state": self.encode(state, path)}
            named = adapter.value_name(value)
            if named is not None:
                return {"type": named[0], "value": named[1]}
        if is_stateful(value):
            cls = type(value)
            return {
                "type": "stateful",
                "class": f"{cls.__module__}.{cls.__qualname__}",
                "state": self.encode(value.state_dict(), path),
            }
        raise CheckpointFormatError(
            f"cannot checkpoint {where(path)}: values of type {type(value).__qualname__} are "
            "not supported (no pickle is used). Store arrays, numbers, strings, None, "
            "dicts/lists/tuples of them, or an object with state_dict()/load_state_dict()."
        )

    def _item(self, key: Any, value: Any, path: tuple[Any, ...]) -> list[Any]:
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise CheckpointFormatError(
                f"cannot checkpoint {where(path)}: dict key {key!r} is a "
                f"{type(key).__name__}; only str and int keys are supported"
            )
        return [key, self.encode(value, (*path, key))]

    def _tensor(
        self, value: Any, adapter: ArrayAdapter, kind: str, path: tuple[Any, ...]
    ) -> dict[str, Any]:
        name = self._unique_name(path)
        if self._staging is None:
            dtype, shape, data = adapter.array_bytes(value, where(path))
        else:
            dtype, shape, data = self._staging.stage(adapter, value, name, where(path))
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


def where(path: tuple[Any, ...]) -> str:
    """How a position in the state reads in an error message: ``state['model']['w']``."""
    return "state" + "".join(f"[{part!r}]" for part in path)
