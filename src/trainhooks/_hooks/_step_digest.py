"""A step's returned value as a few named numbers, and the first difference between two.

``ResumeCheckHook`` records these numbers for the steps after a checkpoint and compares
them when the steps are re-run after a restore. The main case is a scalar loss, kept as
is. Arrays and tensors are reduced to two float64 numbers, their sum and a sum weighted
by position (so that a permuted batch differs too); comparing reductions with a relative
tolerance keeps the check meaningful where bit-exact hashes would flag every last-bit
difference. Values that are not numbers (strings, objects) are skipped.

Frameworks are never imported here: a torch tensor is recognised by its methods, an
array (NumPy, JAX) by ``__array__``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["Difference", "Digest", "digest", "first_difference"]

MAX_NAMES = 64  # numbers kept per step: bounds the journal whatever the step returns
_MAX_DEPTH = 4

Digest = dict[str, float]
# (name, recorded, observed); None for a name only one of the two has
Difference = tuple[str, float | None, float | None]


def digest(result: Any) -> Digest:
    """The numbers ``result`` (a step's return value) is recorded as; may be empty.

    Names are paths into the result: ``""`` for a bare number, ``"loss"`` for a mapping's
    entry, ``"out.1"`` for the second item of ``out``; arrays add ``"#sum"`` and ``"#pos"``.
    """
    out: Digest = {}
    _collect(result, "", out, 0)
    return out


def first_difference(
    recorded: Mapping[str, float], observed: Mapping[str, float], rtol: float, atol: float
) -> Difference | None:
    """The first name whose numbers differ beyond ``atol + rtol * max(|a|, |b|)``, if any.

    Two NaNs count as equal (the same NaN loss is a faithful resume); a name only one
    side has is a difference (the step returned something else).
    """
    for name in [*recorded, *(n for n in observed if n not in recorded)]:
        a, b = recorded.get(name), observed.get(name)
        if a is None or b is None or not _close(a, b, rtol, atol):
            return name, a, b
    return None


def _close(a: float, b: float, rtol: float, atol: float) -> bool:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return True
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    return abs(a - b) <= atol + rtol * max(abs(a), abs(b))


def _collect(value: Any, name: str, out: Digest, depth: int) -> None:
    if len(out) >= MAX_NAMES or depth > _MAX_DEPTH or value is None:
        return
    if isinstance(value, (bool, int, float)):
        out[name] = float(value)
    elif isinstance(value, Mapping):
        for key in sorted(value, key=str):
            _collect(value[key], _join(name, str(key)), out, depth + 1)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _collect(item, _join(name, str(index)), out, depth + 1)
    elif callable(getattr(value, "detach", None)) and callable(getattr(value, "numel", None)):
        _collect_tensor(value, name, out)
    elif hasattr(value, "__array__"):
        _collect_array(value, name, out)


def _collect_tensor(tensor: Any, name: str, out: Digest) -> None:
    """A torch tensor: its value when it has one element, else two float64 reductions."""
    tensor = tensor.detach()
    if tensor.is_complex():
        tensor = tensor.abs()  # complex step results are rare; keep their magnitudes
    if tensor.numel() == 1:
        out[name] = float(tensor.item())
        return
    flat = tensor.reshape(-1).double()
    pair = flat.new_empty(2)
    pair[0] = flat.sum()
    pair[1] = flat.cumsum(0).sum()  # weights n..1: a permutation changes it
    total, positional = pair.tolist()  # one transfer: a single device sync for both
    out[_join(name, "#sum")], out[_join(name, "#pos")] = float(total), float(positional)


def _collect_array(value: Any, name: str, out: Digest) -> None:
    import numpy as np  # lazy: keeps importing the hooks cheap

    array = np.asarray(value)
    if array.dtype.kind not in "biufc":
        return  # strings, objects: nothing to compare
    if array.dtype.kind == "c":
        array = np.abs(array)
    if array.size == 1:
        out[name] = float(array.reshape(()))
        return
    flat = array.reshape(-1).astype(np.float64)
    out[_join(name, "#sum")] = float(flat.sum())
    out[_join(name, "#pos")] = float(np.cumsum(flat).sum())


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
