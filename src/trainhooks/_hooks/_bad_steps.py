"""What ``NanTensorHook`` decides in rollback mode: is a loss bad, where to go back, when to stop.

Where to go back is decided from the checkpoints themselves: the newest one saved before
the bad step whose floating-point values are all finite. A finite loss recorded at save
time would not prove that: the loss of step ``s`` is computed before step ``s``'s update,
and an update with overflowing gradients can turn finite weights into infinite ones while
the loss that led to it was finite. Reading the candidate costs one extra read of a
checkpoint per rollback, which is rare by design.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trainhooks._exceptions import CheckpointError
from trainhooks._saver import load
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._listing import list_checkpoints
from trainhooks._store._remote._url import ObjectPath

__all__ = ["RollbackBudget", "SpikeDetector", "all_finite", "rollback_target"]

logger = logging.getLogger("trainhooks")


class SpikeDetector:
    """Calls a loss a spike when it exceeds ``factor`` times the median of the last
    ``window`` good losses (only once ``window`` of them were seen, and the median is
    positive: a median of zero or less gives no scale to compare with)."""

    def __init__(self, factor: float, window: int) -> None:
        self._factor = factor
        self._window = window
        self._recent: deque[tuple[int, float]] = deque(maxlen=window)

    def check(self, loss: float) -> str | None:
        """Why ``loss`` is a spike, or None when it is not."""
        if len(self._recent) < self._window:
            return None
        median = statistics.median(value for _, value in self._recent)
        if median > 0 and loss > self._factor * median:
            return (
                f"more than {self._factor:g} times the median {median:g} of the last "
                f"{self._window} losses"
            )
        return None

    def add(self, step: int, loss: float) -> None:
        """Remember a good loss."""
        self._recent.append((step, loss))

    def forget_after(self, step: int) -> None:
        """Drop the losses of steps after ``step``: a rollback undid them."""
        kept = [item for item in self._recent if item[0] <= step]
        self._recent.clear()
        self._recent.extend(kept)


class RollbackBudget:
    """At most ``max_rollbacks`` rollbacks whose bad steps lie within ``window`` steps."""

    def __init__(self, max_rollbacks: int, window: int) -> None:
        self.max_rollbacks = max_rollbacks
        self.window = window
        self._bad_steps: list[int] = []

    def record(self, step: int) -> tuple[int, ...]:
        """Note a bad step; return the bad steps of the window that ends at it."""
        self._bad_steps.append(step)
        return tuple(s for s in self._bad_steps if step - self.window < s <= step)

    def exhausted(self, steps_in_window: tuple[int, ...]) -> bool:
        """Whether one more rollback would exceed the budget."""
        return len(steps_in_window) > self.max_rollbacks


def rollback_target(directory: Path | ObjectPath, bad_step: int) -> CheckpointInfo | None:
    """The newest checkpoint in ``directory`` before ``bad_step`` holding only finite values.

    Newest means committed last: after an earlier rollback, a checkpoint of the abandoned
    branch may have a higher step than the current branch's, but it is older."""
    newest_first = sorted(list_checkpoints(directory), key=lambda i: i.commit_order, reverse=True)
    for info in newest_first:
        if info.step >= bad_step:
            continue
        try:
            tree = load(info.path)
        except CheckpointError as exc:  # corrupt or deleted meanwhile: try an older one
            logger.warning("not rolling back to %s: %s", info.path, exc)
            continue
        if all_finite(tree):
            return info
        logger.warning("not rolling back to %s: it holds NaN or infinite values", info.path)
    return None


def all_finite(tree: Any) -> bool:
    """Whether every floating-point number in a loaded state tree is finite."""
    if isinstance(tree, np.ndarray | np.generic):
        return _array_finite(np.asarray(tree))
    if isinstance(tree, float):
        return math.isfinite(tree)
    if isinstance(tree, Mapping):
        return all(all_finite(value) for value in tree.values())
    if isinstance(tree, list | tuple):
        return all(all_finite(value) for value in tree)
    return True


def _array_finite(array: np.ndarray) -> bool:
    if array.dtype.kind in "fc":
        return bool(np.isfinite(array).all())
    if array.dtype.kind == "V":  # ml_dtypes' bfloat16 and float8 types
        try:
            return bool(np.isfinite(array).all())
        except TypeError:  # a structured or raw byte type: no numbers to check
            return True
    return True
