"""``LoggingTensorHook``: log named values of the step's result every N steps or seconds."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from trainhooks._session._hook import (
    HookSession,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
    select_fetches,
)
from trainhooks._session._timer import Clock, SecondOrStepTimer

__all__ = ["LoggingTensorHook"]

logger = logging.getLogger(__name__)


class LoggingTensorHook(SessionRunHook):
    """Logs the values named by ``tensors`` every ``every_n_iter`` runs or ``every_n_secs``.

    As in TF: ``tensors`` is a dict ``{tag: name}`` (logged in sorted tag order) or an
    iterable of names (logged in that order); names are keys of the mapping the step
    returns. Exactly one of ``every_n_iter`` / ``every_n_secs`` must be given, unless
    ``at_end=True`` alone, which logs only once when the session ends. The hook counts its
    own runs (not the global step), so the first run is always logged. ``formatter``, when
    given, receives ``{tag: value}`` and returns the line to log. ``every_n_secs`` are read
    from ``clock`` (default ``time.monotonic``; see ``SecondOrStepTimer``).

    At the end there is no graph to evaluate again, so ``at_end`` logs the values of the
    last step that ran (the hook keeps a reference to each step's result in that mode).
    """

    def __init__(
        self,
        tensors: Mapping[str, str] | Iterable[str],
        every_n_iter: int | None = None,
        every_n_secs: float | None = None,
        at_end: bool = False,
        formatter: Callable[[dict[str, Any]], str] | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        only_log_at_end = at_end and every_n_iter is None and every_n_secs is None
        if not only_log_at_end and (every_n_iter is None) == (every_n_secs is None):
            raise ValueError(
                "LoggingTensorHook needs either at_end=True and/or exactly one of "
                f"every_n_iter and every_n_secs (got every_n_iter={every_n_iter!r}, "
                f"every_n_secs={every_n_secs!r})"
            )
        if every_n_iter is not None and every_n_iter <= 0:
            raise ValueError(f"every_n_iter must be a positive number of runs, got {every_n_iter}")
        if isinstance(tensors, str):
            tensors = [tensors]
        if isinstance(tensors, Mapping):
            self._tag_order = sorted(tensors)
            self._tensors = dict(tensors)
        else:
            self._tag_order = list(tensors)
            self._tensors = {name: name for name in self._tag_order}
        self._formatter = formatter
        self._log_at_end = at_end
        self._timer: SecondOrStepTimer | None = (
            None if only_log_at_end else SecondOrStepTimer(every_n_secs, every_n_iter, clock=clock)
        )
        self._iter_count = 0
        self._last_result: Any = None

    def begin(self) -> None:
        if self._timer is not None:
            self._timer.reset()
        self._iter_count = 0
        self._last_result = None

    # TF decides in before_run and fetches the tensors; here the decision is the same
    # (the timer on this hook's run count) but made in after_run, where the values already
    # are in the step's result: without a before_run every step stays on the fast path.
    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        timer = self._timer
        if timer is not None and timer.should_trigger_for_step(self._iter_count):
            self._log(select_fetches(self._tensors, run_values.step_result))
        if self._log_at_end:
            self._last_result = run_values.step_result
        self._iter_count += 1

    def end(self, session: HookSession) -> None:
        if self._log_at_end and self._iter_count:
            self._log(select_fetches(self._tensors, self._last_result))

    def _log(self, values: dict[str, Any]) -> None:
        elapsed_secs = None
        if self._timer is not None:
            elapsed_secs, _ = self._timer.update_last_triggered_step(self._iter_count)
        if self._formatter is not None:
            logger.info("%s", self._formatter(values))
            return
        line = ", ".join(f"{tag} = {_loggable(values[tag])}" for tag in self._tag_order)
        if elapsed_secs is not None:
            logger.info("%s (%.3f sec)", line, elapsed_secs)
        else:
            logger.info("%s", line)


def _loggable(value: Any) -> Any:
    """A host-side, readable form of ``value``: one-element tensors become Python numbers."""
    shape = getattr(value, "shape", None)
    if shape is None or not hasattr(value, "item"):
        return value
    try:
        if len(shape) == 0 or all(int(d) == 1 for d in shape):
            return value.item()
        if hasattr(value, "detach"):  # torch: leave autograd and the device first
            return value.detach().cpu().numpy()
    except (TypeError, ValueError, RuntimeError):
        return value
    return value
