"""``as_scalar``: turn one value a step returned into a float, or say it is not a scalar.

Steps return whatever their framework produces: Python numbers, NumPy scalars and 0-d
arrays, torch or JAX tensors with one element. Hooks that log or summarise values need a
plain float without importing any framework, so this duck-types on ``shape``/``item``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["as_scalar", "is_scalar_like"]


def is_scalar_like(value: Any) -> bool:
    """True for a real number or a one-element array/tensor (bools and strings excluded)."""
    if isinstance(value, bool | str | bytes):
        return False
    if isinstance(value, numbers.Real):
        return True
    shape = getattr(value, "shape", None)
    if shape is None or not hasattr(value, "item"):
        return False
    try:
        size = math.prod(int(d) for d in shape)
    except TypeError:  # symbolic or unknown dimensions
        return False
    if size != 1:
        return False
    kind = getattr(getattr(value, "dtype", None), "kind", None)  # NumPy / JAX dtypes
    if kind is not None:
        return kind in "iuf"
    dtype = str(getattr(value, "dtype", ""))  # torch dtypes have no ``kind``
    return not any(word in dtype for word in ("bool", "complex", "quint", "qint"))


def as_scalar(value: Any) -> float:
    """The float held by a scalar-like ``value``; ``TypeError`` naming the type otherwise.

    A torch tensor on an accelerator is copied to the host by ``item()``: callers do this
    only on the steps they log, never on every step.
    """
    if type(value) is float:  # the common case, checked first: hooks call this per step
        return value
    if not is_scalar_like(value):
        shape = getattr(value, "shape", None)
        detail = f" of shape {tuple(shape)}" if shape is not None else ""
        raise TypeError(
            f"expected a number or a one-element array/tensor, got {type(value).__name__}{detail}"
        )
    if isinstance(value, numbers.Real):
        return float(value)
    return float(value.item())
