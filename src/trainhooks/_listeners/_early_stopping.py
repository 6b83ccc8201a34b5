"""``EarlyStoppingListener``: stop training when a metric stops improving."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from trainhooks._listeners._base import CheckpointSaverListener
from trainhooks._listeners._evaluation import EvaluationListener
from trainhooks._listeners._metric import MetricFn, MetricReader, check_mode, improves
from trainhooks._session._hook import HookSession

__all__ = ["EarlyStoppingListener"]

logger = logging.getLogger(__name__)


class EarlyStoppingListener(CheckpointSaverListener):
    """Returns True from ``after_save`` once ``metric`` has not improved for ``patience``
    evaluations in a row.

    "Improved" means better than the best so far by more than ``min_delta`` (``mode="min"``:
    lower is better, ``"max"``: higher). Saves where the metric was not evaluated (the
    ``source`` listener evaluates every n-th save) do not count. The stop is the saver's
    ordinary one: every listener still gets its ``after_save``, the session stops after
    this step and ``end`` does not save again. ``best``, ``best_step`` and ``stopped_step``
    tell what happened.

    The count survives restarts: it is saved inside each checkpoint (``state_dict``, under
    ``name``, default ``"EarlyStoppingListener"``) and restored at session creation, so a
    run killed and resumed stops at the same step as an uninterrupted one.
    """

    def __init__(
        self,
        metric: str,
        patience: int,
        mode: str = "min",
        min_delta: float = 0.0,
        *,
        source: EvaluationListener | None = None,
        metric_fn: MetricFn | None = None,
        name: str = "EarlyStoppingListener",
    ) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1 evaluations, got {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.mode = check_mode("EarlyStoppingListener", mode)
        self.patience = patience
        self.min_delta = min_delta
        self._read = MetricReader("EarlyStoppingListener", metric, source, metric_fn)
        self.metric = metric
        self.name = name
        self.best: float | None = None
        self.best_step: int | None = None
        self.stopped_step: int | None = None
        self._bad_evaluations = 0

    def begin(self) -> None:
        self.best = None
        self.best_step = None
        self.stopped_step = None
        self._bad_evaluations = 0

    def state_dict(self) -> dict[str, Any]:
        """What a restart must not forget: the best value so far and the count since."""
        return {
            "best": self.best,
            "best_step": self.best_step,
            "bad_evaluations": self._bad_evaluations,
            "stopped_step": self.stopped_step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        best = state["best"]
        self.best = None if best is None else float(best)
        self.best_step = _optional_int(state["best_step"])
        self._bad_evaluations = int(state["bad_evaluations"])
        self.stopped_step = _optional_int(state["stopped_step"])

    def after_save(self, session: HookSession, global_step_value: int) -> bool:
        value = self._read(session, global_step_value)
        if value is None:
            return False
        if improves(value, self.best, self.mode, self.min_delta):
            self.best, self.best_step = value, global_step_value
            self._bad_evaluations = 0
            return False
        self._bad_evaluations += 1
        if self._bad_evaluations < self.patience:
            return False
        self.stopped_step = global_step_value
        logger.info(
            "Early stopping at step %d: %s = %s has not improved on %s (step %s) for %d "
            "evaluations.",
            global_step_value,
            self.metric,
            value,
            self.best,
            self.best_step,
            self._bad_evaluations,
        )
        return True


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
