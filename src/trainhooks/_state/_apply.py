"""Restoring decoded values *into* the caller's objects, in place.

Tensors are copied into existing tensors/arrays (after a shape and dtype check, so a
mismatch is a clear error rather than a silent cast), objects with ``load_state_dict`` get
their saved state, generators get their state back, and plain dicts/lists are refilled.
Values with nowhere to go in place are returned for the parent to store.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import numpy as np

from trainhooks._exceptions import StateMismatchError
from trainhooks._state._arrays import array_kind, to_numpy
from trainhooks._state._decode import GeneratorValue, StatefulValue
from trainhooks._state._encode import is_stateful
from trainhooks._state._encode import where as _where
from trainhooks._state._mapped import MappedTensor

__all__ = ["apply_state"]


def apply_state(
    target: MutableMapping[str, Any], saved: Mapping[str, Any], *, strict: bool, cast: bool
) -> None:
    """Restore ``saved`` (decoded top-level mapping) into ``target`` in place."""
    missing = [k for k in target if k not in saved]
    unexpected = [k for k in saved if k not in target]
    if strict and (missing or unexpected):
        raise StateMismatchError(
            f"the checkpoint's entries do not match the state: missing from the checkpoint "
            f"{missing}, not in the state {unexpected}; pass strict=False to restore only "
            "the entries both have"
        )
    _Applier(cast).fill_mapping(target, {k: v for k, v in saved.items() if k in target}, ())


class _Applier:
    def __init__(self, cast: bool) -> None:
        self.cast = cast

    def apply(self, target: Any, value: Any, path: tuple[Any, ...]) -> Any:
        if isinstance(value, StatefulValue):
            return self._stateful(target, value, path)
        if isinstance(value, GeneratorValue):
            return _generator(target, value)
        if isinstance(value, MappedTensor) or array_kind(value) is not None:
            return self._array(target, value, path)
        if isinstance(value, dict):
            if isinstance(target, MutableMapping) and not is_stateful(target):
                self.fill_mapping(target, value, path, drop_extra=True)
                return target
            return {k: self.apply(None, v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            if isinstance(target, list) and len(target) == len(value):
                target[:] = [
                    self.apply(t, v, (*path, i))
                    for i, (t, v) in enumerate(zip(target, value, strict=True))
                ]
                return target
            return [self.apply(None, v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, tuple):
            templates = (
                target
                if isinstance(target, tuple) and len(target) == len(value)
                else (None,) * len(value)
            )
            return tuple(
                self.apply(t, v, (*path, i))
                for i, (t, v) in enumerate(zip(templates, value, strict=True))
            )
        return value

    def fill_mapping(
        self,
        target: MutableMapping[Any, Any],
        value: Mapping[Any, Any],
        path: tuple[Any, ...],
        drop_extra: bool = False,
    ) -> None:
        for key, item in value.items():
            target[key] = self.apply(target.get(key), item, (*path, key))
        if drop_extra:
            for key in [k for k in target if k not in value]:
                del target[key]

    def _stateful(self, target: Any, value: StatefulValue, path: tuple[Any, ...]) -> Any:
        if not callable(getattr(target, "load_state_dict", None)):
            raise StateMismatchError(
                f"cannot restore {_where(path)}: the checkpoint holds the state_dict of a "
                f"{value.cls}, but the target is {type(target).__name__} without load_state_dict()"
            )
        # nn.Module.load_state_dict copies every tensor it is given, so it may read straight
        # from the mapping; other objects may keep what they get, so they get fresh copies.
        state = resolve_mapped(value.state, views=_is_torch_module(target))
        template = target.state_dict() if callable(getattr(target, "state_dict", None)) else None
        if template is not None:
            state = self._checked_against(template, state, path)
        target.load_state_dict(state)
        return target

    def _checked_against(self, template: Any, value: Any, path: tuple[Any, ...]) -> Any:
        """Check saved tensors against the target's current ones (shape/dtype), casting if asked."""
        if array_kind(value) is not None and array_kind(template) is not None:
            if self._needs_cast(template, value, path):
                return _cast_like(value, template)
            return value
        if isinstance(value, dict) and isinstance(template, Mapping):
            return {
                k: self._checked_against(template.get(k), v, (*path, k)) if k in template else v
                for k, v in value.items()
            }
        if (
            isinstance(value, (list, tuple))
            and isinstance(template, (list, tuple))
            and len(value) == len(template)
        ):
            items = [
                self._checked_against(t, v, (*path, i))
                for i, (t, v) in enumerate(zip(template, value, strict=True))
            ]
            return items if isinstance(value, list) else tuple(items)
        return value

    def _array(self, target: Any, value: Any, path: tuple[Any, ...]) -> Any:
        """Copy ``value`` into an existing tensor/array ``target``; else hand out a fresh array."""
        kind = array_kind(target)
        writable = kind == "torch" or (kind == "numpy" and target.flags.writeable)
        if not writable:
            return value.materialize() if isinstance(value, MappedTensor) else value
        self._needs_cast(target, value, path)  # raises on a mismatch unless cast=True
        if kind == "torch":
            torch = sys.modules["torch"]
            source = value.as_torch() if isinstance(value, MappedTensor) else value
            if not isinstance(source, torch.Tensor):
                source = torch.as_tensor(to_numpy(source))
            with torch.no_grad():
                target.copy_(source)  # one copy, mapping -> target; casts when asked to
        else:
            source = value.as_numpy() if isinstance(value, MappedTensor) else to_numpy(value)
            np.copyto(target, source, casting="unsafe")
        return target

    def _needs_cast(self, target: Any, value: Any, path: tuple[Any, ...]) -> bool:
        """Whether ``value`` must be cast to fit ``target``; raises on a shape mismatch, and on
        a dtype mismatch unless ``cast=True``."""
        t_shape, v_shape = tuple(target.shape), tuple(value.shape)
        t_dtype, v_dtype = _dtype_name(target), _dtype_name(value)
        if t_shape != v_shape:
            raise StateMismatchError(
                f"cannot restore {_where(path)}: the checkpoint has shape {list(v_shape)}, the "
                f"target has {list(t_shape)}; the model's architecture differs from the saved one"
            )
        if t_dtype != v_dtype:
            if not self.cast:
                raise StateMismatchError(
                    f"cannot restore {_where(path)}: the checkpoint has dtype {v_dtype}, the "
                    f"target has {t_dtype}; pass cast=True to convert"
                )
            return True
        return False


def _cast_like(value: Any, target: Any) -> Any:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(target, torch.Tensor):
        source = value if isinstance(value, torch.Tensor) else torch.as_tensor(to_numpy(value))
        return source.to(target.dtype)
    return to_numpy(value).astype(target.dtype)


def _dtype_name(array: Any) -> str:
    return str(array.dtype).removeprefix("torch.")


def resolve_mapped(value: Any, *, views: bool) -> Any:
    """Replace every ``MappedTensor`` in a structure by a view (``views``) or a fresh copy."""
    if isinstance(value, MappedTensor):
        if not views:
            return value.materialize()
        return value.as_torch() if value.kind == "torch" else value.as_numpy()
    if isinstance(value, dict):
        return {k: resolve_mapped(v, views=views) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [resolve_mapped(v, views=views) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, (StatefulValue, GeneratorValue)):
        return type(value)(
            value.cls if isinstance(value, StatefulValue) else value.kind,
            resolve_mapped(value.state, views=views),
        )
    return value


def _is_torch_module(target: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(target, torch.nn.Module)


def _generator(target: Any, value: GeneratorValue) -> Any:
    value = GeneratorValue(value.kind, resolve_mapped(value.state, views=False))
    if value.kind == "numpy_generator":
        generator = (
            target if isinstance(target, np.random.Generator) else _new_numpy_generator(value.state)
        )
        generator.bit_generator.state = value.state
        return generator
    if value.kind == "numpy_random_state":
        legacy = target if isinstance(target, np.random.RandomState) else np.random.RandomState()
        legacy.set_state(value.state)
        return legacy
    torch = sys.modules.get("torch")
    if torch is None:  # torch not in use: nothing to hand the state to
        return value.state
    generator = target if isinstance(target, torch.Generator) else torch.Generator()
    generator.set_state(value.state)
    return generator


_BIT_GENERATORS = {"PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"}


def _new_numpy_generator(state: Mapping[str, Any]) -> np.random.Generator:
    name = str(state.get("bit_generator"))
    if name not in _BIT_GENERATORS:
        raise StateMismatchError(f"unknown NumPy bit generator {name!r} in the checkpoint")
    return np.random.Generator(getattr(np.random, name)())
