"""Restoring decoded values *into* the caller's objects, in place, all or nothing.

Two passes. The first walks the checkpoint beside the caller's state and checks every leaf
— tensor shapes and dtypes (a mismatch is a clear error rather than a silent cast, unless
``cast=True``), the structure of containers that hold arrays or objects, generators, and
each object's saved state against its current ``state_dict()`` and against what its
framework's ``load_state_dict`` refuses — and plans one step per leaf. The second pass runs
the steps: tensors are copied into existing tensors, objects get ``load_state_dict``,
generators get their state, dicts, lists and dataclasses are refilled, and immutable
containers (tuples, named tuples, frozen dataclasses, JAX pytree nodes) are rebuilt from the
target's own type and put in their parent's place (see ``_containers``). So a checkpoint
that does not fit raises before a single byte of the caller's objects changes. Only a user-written
``load_state_dict`` that refuses a state its own ``state_dict()`` template accepted can
still fail in the second pass; nothing can check what such a method does without running it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, MutableMapping, Sequence
from typing import Any

from trainhooks._exceptions import CheckpointCorruptError, StateMismatchError
from trainhooks._state._adapters._base import ArrayAdapter
from trainhooks._state._adapters._registry import adapter_for, adapter_of, loaded_adapters
from trainhooks._state._containers import Children, Rebuild, rebuild_tuple, target_record
from trainhooks._state._decode import CallableValue, GeneratorValue, RecordValue, StatefulValue
from trainhooks._state._encode import is_stateful
from trainhooks._state._encode import where as _where
from trainhooks._state._mapped import MappedTensor

__all__ = ["apply_state"]

Step = Callable[[], Any]  # runs one planned restore; returns what the parent should hold


def apply_state(
    target: MutableMapping[str, Any],
    saved: Mapping[str, Any],
    *,
    strict: bool,
    cast: bool,
    optional: Collection[str] = (),
) -> None:
    """Restore ``saved`` (the decoded top-level mapping, tensors as ``MappedTensor``) into
    ``target`` in place; raises ``StateMismatchError`` before changing anything.

    Top-level entries named in ``optional`` may be missing on either side, even when
    ``strict``: they are restored only when both have them.
    """
    missing = [k for k in target if k not in saved and k not in optional]
    unexpected = [k for k in saved if k not in target and k not in optional]
    if strict and (missing or unexpected):
        raise StateMismatchError(
            f"the checkpoint's entries do not match the state: missing from the checkpoint "
            f"{missing}, not in the state {unexpected}; pass strict=False to restore only "
            "the entries both have"
        )
    both = {k: v for k, v in saved.items() if k in target}
    restore = _Planner(strict=strict, cast=cast).mapping(target, both, (), drop_extra=False)
    restore()


class _Planner:
    """The checking pass: every ``plan*`` method raises on a misfit or returns a ``Step``."""

    def __init__(self, *, strict: bool, cast: bool) -> None:
        self.strict = strict
        self.cast = cast

    def plan(self, target: Any, value: Any, path: tuple[Any, ...]) -> Step:
        if isinstance(value, StatefulValue):
            return self._stateful(target, value, path)
        if isinstance(value, GeneratorValue):
            return self._generator(target, value, path)
        if isinstance(value, MappedTensor):
            return self._tensor(target, value, path)
        if isinstance(value, RecordValue):
            return self._record(target, value.items, path)
        if isinstance(value, CallableValue):
            return lambda: target  # not saved: the target's own callable stays
        if isinstance(value, dict):
            return self._dict(target, value, path)
        if isinstance(value, (list, tuple)):
            return self._sequence(target, value, path)
        if isinstance(value, bytearray) and isinstance(target, bytearray):
            return lambda: _refilled_bytes(target, value)
        return lambda: value

    def mapping(
        self,
        target: MutableMapping[Any, Any],
        value: Mapping[Any, Any],
        path: tuple[Any, ...],
        *,
        drop_extra: bool,
    ) -> Step:
        steps = [(k, self.plan(target.get(k), item, (*path, k))) for k, item in value.items()]

        def refill() -> Any:
            for key, step in steps:
                target[key] = step()
            if drop_extra:
                for key in [k for k in target if k not in value]:
                    del target[key]
            return target

        return refill

    def _dict(self, target: Any, value: dict[Any, Any], path: tuple[Any, ...]) -> Step:
        if isinstance(target, Mapping) and not isinstance(target, MutableMapping):
            record = target_record(target)  # an immutable mapping node (flax's FrozenDict)
            if record is not None:
                return self._into_record(*record, value, path)
        if not isinstance(target, MutableMapping) or is_stateful(target):
            steps = {k: self.plan(None, v, (*path, k)) for k, v in value.items()}
            fresh = OrderedDict if isinstance(value, OrderedDict) else dict
            return lambda: fresh((k, step()) for k, step in steps.items())
        if self.strict and target.keys() != value.keys() and _holds_templates(target):
            missing = [k for k in target if k not in value]
            unexpected = [k for k in value if k not in target]
            raise StateMismatchError(
                f"cannot restore {_where(path)}: missing from the checkpoint {missing}, not "
                f"in the state {unexpected}; the structure differs from the saved one (pass "
                "strict=False to take the checkpoint's entries instead)"
            )
        return self.mapping(target, value, path, drop_extra=True)

    def _sequence(self, target: Any, value: Sequence[Any], path: tuple[Any, ...]) -> Step:
        kind = list if isinstance(value, list) else tuple
        same_kind = isinstance(target, kind)
        if same_kind and len(target) != len(value) and self.strict and _holds_templates(target):
            raise StateMismatchError(
                f"cannot restore {_where(path)}: the checkpoint has {len(value)} items, the "
                f"state has {len(target)}; the structure differs from the saved one (pass "
                f"strict=False to take the checkpoint's {kind.__name__} instead)"
            )
        in_place = same_kind and len(target) == len(value)
        templates = target if in_place else (None,) * len(value)
        steps = [
            self.plan(t, v, (*path, i))
            for i, (t, v) in enumerate(zip(templates, value, strict=True))
        ]
        if in_place and kind is list:

            def refill() -> Any:
                target[:] = [step() for step in steps]
                return target

            return refill
        if in_place:  # the target's own tuple type: a named tuple stays one
            return lambda: rebuild_tuple(target, [step() for step in steps])
        return lambda: kind(step() for step in steps)

    def _record(self, target: Any, items: dict[Any, Any], path: tuple[Any, ...]) -> Step:
        record = target_record(target)
        if record is None:  # no record to rebuild: a dict (refilled when the target is one)
            return self._dict(target, items, path)
        return self._into_record(*record, items, path)

    def _into_record(
        self, children: Children, rebuild: Rebuild, items: Mapping[Any, Any], path: tuple[Any, ...]
    ) -> Step:
        """Restore saved children into a record target, rebuilt (or refilled) by ``rebuild``.
        Its fields are its structure: with ``strict`` they must be the saved ones; without,
        children the checkpoint lacks keep the target's values."""
        names = [name for name, _ in children]
        if self.strict and set(names) != set(items):
            missing = [n for n in names if n not in items]
            unexpected = [k for k in items if k not in names]
            raise StateMismatchError(
                f"cannot restore {_where(path)}: missing from the checkpoint {missing}, not "
                f"in the target {unexpected}; the saved object had other fields (pass "
                "strict=False to restore only the fields both have)"
            )
        steps = [
            self.plan(child, items[name], (*path, name)) if name in items else _keep(child)
            for name, child in children
        ]
        return lambda: rebuild([step() for step in steps])

    def _tensor(self, target: Any, tensor: MappedTensor, path: tuple[Any, ...]) -> Step:
        found = adapter_of(target)
        if found is None:  # nothing to fill: a fresh array of the saved kind
            return tensor.materialize
        adapter = found[0]
        self._check_fits(target, tensor, path)
        if not adapter.can_fill(target):  # immutable (JAX, NumPy scalars, read-only arrays)
            return lambda: adapter.cast_copy(tensor, target)

        def fill() -> Any:
            adapter.copy_into(target, tensor)
            return target

        return fill

    def _check_fits(self, target: Any, tensor: MappedTensor, path: tuple[Any, ...]) -> None:
        """Raise unless ``tensor`` fits ``target``: same shape, and same dtype unless cast."""
        shape, dtype = tuple(target.shape), _dtype_name(target)
        if shape != tensor.shape:
            raise StateMismatchError(
                f"cannot restore {_where(path)}: the checkpoint has shape "
                f"{list(tensor.shape)}, the target has {list(shape)}; the model's "
                "architecture differs from the saved one"
            )
        if dtype != tensor.dtype and not self.cast:
            raise StateMismatchError(
                f"cannot restore {_where(path)}: the checkpoint has dtype {tensor.dtype}, the "
                f"target has {dtype}; pass cast=True to convert"
            )

    def _stateful(self, target: Any, value: StatefulValue, path: tuple[Any, ...]) -> Step:
        if not callable(getattr(target, "load_state_dict", None)):
            raise StateMismatchError(
                f"cannot restore {_where(path)}: the checkpoint holds the state_dict of a "
                f"{value.cls}, but the target is {type(target).__name__} without load_state_dict()"
            )
        for adapter in loaded_adapters():
            self._refuse(adapter.refusal("stateful", target, value.state), path)
        template = target.state_dict() if callable(getattr(target, "state_dict", None)) else None
        self._check_template(template, value.state, path)
        # An object whose load_state_dict copies every tensor it is given (a torch module)
        # may read straight from the mapping; others may keep what they get: fresh copies.
        views = any(adapter.loads_by_copy(target) for adapter in loaded_adapters())

        def load() -> Any:
            target.load_state_dict(_state_for(value.state, template, views=views))
            return target

        return load

    def _check_template(self, template: Any, value: Any, path: tuple[Any, ...]) -> None:
        """Check saved tensors against the object's current ones where both have one."""
        if isinstance(value, MappedTensor):
            if adapter_of(template) is not None:
                self._check_fits(template, value, path)
        elif isinstance(value, dict) and isinstance(template, Mapping):
            for key, item in value.items():
                if key in template:
                    self._check_template(template[key], item, (*path, key))
        elif isinstance(value, (list, tuple)) and isinstance(template, (list, tuple)):
            if len(value) == len(template):
                for i, (t, v) in enumerate(zip(template, value, strict=True)):
                    self._check_template(t, v, (*path, i))
        elif isinstance(value, GeneratorValue):
            adapter = adapter_for(value.kind)
            if adapter is not None:
                self._refuse(adapter.refusal(value.kind, None, value.state), path)

    def _generator(self, target: Any, value: GeneratorValue, path: tuple[Any, ...]) -> Step:
        adapter = adapter_for(value.kind)
        if adapter is None:  # its framework is not in use: nothing to hand the state to
            return lambda: _state_for(value.state, None, views=False)
        self._refuse(adapter.refusal(value.kind, target, value.state), path)
        return lambda: _restored_generator(
            adapter, value.kind, target, _state_for(value.state, None, views=False)
        )

    @staticmethod
    def _refuse(reason: str | None, path: tuple[Any, ...]) -> None:
        if reason is not None:
            raise StateMismatchError(f"cannot restore {_where(path)}: {reason}")


def _state_for(value: Any, template: Any, *, views: bool) -> Any:
    """What an object's ``load_state_dict`` gets: every ``MappedTensor`` as a view of the
    mapping (``views``), a fresh copy, or — where its template has another dtype, which the
    checking pass allowed only with ``cast=True`` — a copy cast to the template's dtype."""
    if isinstance(value, MappedTensor):
        found = adapter_of(template)
        if found is not None and _dtype_name(template) != value.dtype:
            return found[0].cast_copy(value, template)
        adapter = adapter_for(value.kind)
        if views and adapter is not None:
            return adapter.view(value)
        return value.materialize()
    if isinstance(value, dict):
        inner = template if isinstance(template, Mapping) else {}
        return {k: _state_for(v, inner.get(k), views=views) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        same = isinstance(template, (list, tuple)) and len(template) == len(value)
        templates = template if same else (None,) * len(value)
        items = [_state_for(v, t, views=views) for v, t in zip(value, templates, strict=True)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, GeneratorValue):  # a generator inside an object's state: a new one
        state = _state_for(value.state, None, views=False)
        adapter = adapter_for(value.kind)
        return state if adapter is None else _restored_generator(adapter, value.kind, None, state)
    if isinstance(value, StatefulValue):  # no object to load it into: its plain state
        return _state_for(value.state, None, views=views)
    if isinstance(value, RecordValue):
        return _state_for(value.items, None, views=views)
    return None if isinstance(value, CallableValue) else value


def _keep(value: Any) -> Step:
    return lambda: value


def _refilled_bytes(target: bytearray, value: bytearray) -> bytearray:
    target[:] = value
    return target


def _restored_generator(adapter: ArrayAdapter, kind: str, target: Any, state: Any) -> Any:
    """Set a generator's state; one that no generator produces means a forged or damaged
    checkpoint (``CheckpointCorruptError``), not a target of the wrong kind."""
    try:
        return adapter.restore_generator(kind, target, state)
    except (TypeError, ValueError, OverflowError, KeyError, IndexError, RuntimeError) as exc:
        raise CheckpointCorruptError(
            f"the saved {kind} state is invalid ({type(exc).__name__}: {exc})"
        ) from None


def _holds_templates(container: Any) -> bool:
    """Whether a container holds what is restored in place (arrays, objects with
    ``state_dict``): then its structure is the caller's, not something to replace."""
    found = adapter_of(container)
    if found is not None:
        return not found[1].endswith("_scalar")  # scalars (NumPy's) are plain values
    if is_stateful(container):
        return True
    if isinstance(container, Mapping):
        return any(_holds_templates(v) for v in container.values())
    if isinstance(container, (list, tuple)):
        return any(_holds_templates(v) for v in container)
    if container is None or isinstance(container, (str, bytes, bytearray, int, float)):
        return False
    record = target_record(container)
    return record is not None and any(_holds_templates(child) for _, child in record[0])


def _dtype_name(array: Any) -> str:
    """A dtype as the checkpoint names it ("float32"); torch spells it "torch.float32"."""
    return str(array.dtype).rpartition(".")[2]
