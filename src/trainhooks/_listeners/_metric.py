"""Where listeners that act on a metric read it: an ``EvaluationListener`` or a function."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from trainhooks._listeners._evaluation import EvaluationListener
from trainhooks._session._hook import HookSession
from trainhooks._summary import as_scalar

__all__ = ["MetricFn", "MetricReader", "check_mode", "improves"]

MetricFn = Callable[[HookSession], Any]


class MetricReader:
    """Reads ``metric`` for the save at ``step``, or ``None`` when it was not evaluated then.

    ``source``: an ``EvaluationListener`` placed *before* the reader's listener in the list
    (listeners run in order, so its metrics for the step exist by then). ``metric_fn``:
    ``metric_fn(session)`` returning a number or a dict containing ``metric``.
    """

    def __init__(
        self,
        owner: str,
        metric: str,
        source: EvaluationListener | None,
        metric_fn: MetricFn | None,
    ) -> None:
        if (source is None) == (metric_fn is None):
            raise ValueError(
                f"{owner} needs exactly one metric source: source=EvaluationListener(...) "
                "(placed before it in the listener list) or metric_fn=lambda session: ..."
            )
        if source is not None and not isinstance(source, EvaluationListener):
            raise TypeError(
                f"{owner}: source must be an EvaluationListener, got {type(source).__name__}"
            )
        self.owner = owner
        self.metric = metric
        self.source = source
        self.metric_fn = metric_fn
        self._warned_order = False

    def __call__(self, session: HookSession, step: int) -> float | None:
        if self.source is not None:
            metrics = self.source.history.get(step)
            if metrics is None:
                self._warn_if_misordered(step)
                return None
        else:
            assert self.metric_fn is not None
            metrics = self.metric_fn(session)
        if not isinstance(metrics, Mapping):
            return as_scalar(metrics)
        if self.metric not in metrics:
            raise KeyError(
                f"{self.owner}: metric {self.metric!r} missing at step {step}; the metrics "
                f"are {sorted(metrics)}"
            )
        return as_scalar(metrics[self.metric])

    def _warn_if_misordered(self, step: int) -> None:
        source = self.source
        if source is None or source.every_n_saves != 1 or self._warned_order:
            return
        self._warned_order = True
        warnings.warn(
            f"{self.owner}: the EvaluationListener {source.name!r} has no metrics for step "
            f"{step} although it evaluates every save; put it before {self.owner} in the "
            "listener list (listeners are called in list order)",
            stacklevel=3,
        )


def improves(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` (NaN never improves)."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    if mode == "max":
        return value > best + min_delta
    return value < best - min_delta


def check_mode(owner: str, mode: str) -> str:
    """Validate ``mode``: ``"max"`` (bigger is better) or ``"min"``."""
    if mode not in ("max", "min"):
        raise ValueError(f"{owner}: mode must be 'max' or 'min', got {mode!r}")
    return mode
