"""Pure computations on a loaded state tree: flat names, tensor statistics, tree diffs.

``trainhooks.load`` returns nested dicts/lists of NumPy arrays and plain values. The CLI
names every leaf by its path joined with ``/`` (``model/layer.0.weight``): ``/`` rather
than ``.`` because torch ``state_dict`` keys already contain dots. Dicts are always
descended into; a list or tuple only when it holds an array somewhere, so a list of plain
numbers (an RNG state, an optimizer's ``param_groups``) stays one readable value instead
of hundreds of leaves. Nothing here prints: rendering lives in the command modules.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SEPARATOR = "/"


def is_tensor(value: Any) -> bool:
    """Whether a loaded leaf is a stored tensor: an ndarray, or a NumPy scalar (a saved
    ``np.float64(3.5)`` is stored as a 0-d tensor and loads back as a NumPy scalar)."""
    return isinstance(value, (np.ndarray, np.generic))


def flatten(tree: Any) -> dict[str, Any]:
    """``{"a": {"b": arr}}`` -> ``{"a/b": arr}``, in the tree's own order."""
    leaves: dict[str, Any] = {}
    _walk(tree, "", leaves)
    return leaves


def _walk(node: Any, prefix: str, leaves: dict[str, Any]) -> None:
    if isinstance(node, Mapping) and (node or not prefix):
        for key, child in node.items():
            _walk(child, _join(prefix, str(key)), leaves)
    elif isinstance(node, (list, tuple)) and _holds_array(node):
        for index, child in enumerate(node):
            _walk(child, _join(prefix, str(index)), leaves)
    else:
        leaves[prefix or "."] = node


def _join(prefix: str, key: str) -> str:
    return f"{prefix}{SEPARATOR}{key}" if prefix else key


def _holds_array(node: Any) -> bool:
    if is_tensor(node):
        return True
    if isinstance(node, Mapping):
        return any(_holds_array(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return any(_holds_array(v) for v in node)
    return False


def find_leaf(leaves: Mapping[str, Any], name: str) -> str:
    """The flat name ``name`` refers to: exact, or the one leaf ending in ``/name``.

    Raises KeyError with the candidates (or the nearest names) when it is ambiguous or
    unknown, so the user sees what to type instead.
    """
    if name in leaves:
        return name
    suffix = SEPARATOR + name.strip(SEPARATOR)
    matches = [key for key in leaves if key.endswith(suffix)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise KeyError(f"{name!r} is ambiguous; it matches {', '.join(matches[:8])}")
    close = difflib.get_close_matches(name, list(leaves), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"no entry named {name!r}{hint}")


def tensor_stats(array: np.ndarray) -> dict[str, Any]:
    """Summary statistics of one tensor: extremes, mean, std, norm, NaN/Inf/zero counts.

    Statistics are computed in float64 over the finite elements; the NaN and Inf counts
    say what was left out. Booleans report how many are true instead.
    """
    stats: dict[str, Any] = {
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "numel": int(array.size),
        "nbytes": int(array.nbytes),
    }
    if array.size == 0:
        return stats
    if array.dtype == np.bool_:
        stats["num_true"] = int(np.count_nonzero(array))
        stats["num_false"] = int(array.size - stats["num_true"])
        return stats
    values = as_float64(array)
    if values is None:
        return stats
    finite = np.isfinite(values)
    stats["num_nan"] = int(np.count_nonzero(np.isnan(values)))
    stats["num_inf"] = int(np.count_nonzero(np.isinf(values)))
    stats["num_zero"] = int(np.count_nonzero(values == 0))
    kept = values[finite]
    if kept.size:
        exact = array.dtype.kind in "iu"  # integers: exact extremes, not float64-rounded
        stats["min"] = array.min().item() if exact else float(kept.min())
        stats["max"] = array.max().item() if exact else float(kept.max())
        stats["mean"] = float(kept.mean())
        stats["std"] = float(kept.std())
        stats["abs_max"] = float(np.abs(kept).max())
        stats["l2_norm"] = float(np.sqrt(np.square(kept).sum()))
    return stats


def as_float64(array: np.ndarray) -> np.ndarray | None:
    """``array`` as float64 (bfloat16 via ml_dtypes included), or None if not numeric."""
    if array.dtype.kind == "c":
        return None
    try:
        return np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class TensorChange:
    """One tensor present in both trees whose bytes differ.

    ``max_abs`` and ``max_rel`` are None when the shapes differ (nothing to compare
    element-wise). ``max_rel`` is ``max|a-b| / max(max|a|, max|b|)``: relative to the
    tensor's scale, so one element near zero does not make it infinite.
    """

    name: str
    old_dtype: str
    new_dtype: str
    old_shape: tuple[int, ...]
    new_shape: tuple[int, ...]
    num_changed: int | None
    max_abs: float | None
    max_rel: float | None


@dataclass
class TreeDiff:
    """What differs between two loaded trees, by flat name."""

    added: dict[str, Any] = field(default_factory=dict)
    removed: dict[str, Any] = field(default_factory=dict)
    changed_tensors: list[TensorChange] = field(default_factory=list)
    changed_values: list[tuple[str, Any, Any]] = field(default_factory=list)
    num_unchanged: int = 0

    @property
    def identical(self) -> bool:
        """No leaf was added, removed or changed."""
        return not (self.added or self.removed or self.changed_tensors or self.changed_values)


def diff_trees(old: Any, new: Any) -> TreeDiff:
    """Compare two loaded state trees leaf by leaf."""
    a, b = flatten(old), flatten(new)
    result = TreeDiff()
    result.removed = {name: a[name] for name in a if name not in b}
    result.added = {name: b[name] for name in b if name not in a}
    for name in (n for n in a if n in b):
        left, right = a[name], b[name]
        if is_tensor(left) and is_tensor(right):
            change = compare_tensors(name, left, right)
            if change is None:
                result.num_unchanged += 1
            else:
                result.changed_tensors.append(change)
        elif is_tensor(left) or is_tensor(right) or not _values_equal(left, right):
            result.changed_values.append((name, left, right))
        else:
            result.num_unchanged += 1
    return result


def _values_equal(left: Any, right: Any) -> bool:
    try:
        return bool(type(left) is type(right) and left == right)
    except (TypeError, ValueError):
        return False


def compare_tensors(name: str, left: np.ndarray, right: np.ndarray) -> TensorChange | None:
    """The change between two tensors, or None when they are bit-identical."""
    same_layout = left.dtype == right.dtype and left.shape == right.shape
    if same_layout and left.tobytes() == right.tobytes():
        return None
    num_changed = max_abs = max_rel = None
    if left.shape == right.shape:
        num_changed, max_abs, max_rel = _elementwise(left, right)
        if num_changed == 0 and left.dtype == right.dtype:
            return None  # equal values, different bits (e.g. -0.0 vs 0.0 or NaN payloads)
    return TensorChange(
        name=name,
        old_dtype=str(left.dtype),
        new_dtype=str(right.dtype),
        old_shape=tuple(left.shape),
        new_shape=tuple(right.shape),
        num_changed=num_changed,
        max_abs=max_abs,
        max_rel=max_rel,
    )


def _elementwise(
    left: np.ndarray, right: np.ndarray
) -> tuple[int | None, float | None, float | None]:
    a, b = as_float64(left), as_float64(right)
    if a is None or b is None:
        differs = left != right
        return int(np.count_nonzero(differs)), None, None
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    num_changed = int(np.count_nonzero(~same))
    if num_changed == 0:
        return 0, 0.0, 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        delta = np.abs(a - b)
    delta = np.where(same, 0.0, np.where(np.isnan(delta), np.inf, delta))
    max_abs = float(delta.max())
    magnitudes = np.abs(np.concatenate([a.ravel(), b.ravel()]))
    finite = magnitudes[np.isfinite(magnitudes)]
    scale = float(finite.max()) if finite.size else 0.0
    max_rel = max_abs / scale if scale > 0 else float("inf")
    return num_changed, max_abs, max_rel


def entry_json(name: str, value: Any) -> dict[str, Any]:
    """One leaf as JSON: a tensor's dtype, shape and bytes, or a plain value itself."""
    if is_tensor(value):
        return {
            "name": name,
            "kind": "tensor",
            "dtype": str(value.dtype),
            "shape": list(value.shape),
            "nbytes": int(value.nbytes),
        }
    return {"name": name, "kind": "value", "value": value}
