"""``StepCounterHook``: report training speed (global steps per second)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from trainhooks._session._hook import (
    HookSession,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
)
from trainhooks._session._timer import Clock, SecondOrStepTimer

__all__ = ["StepCounterHook"]

_LOG = logging.getLogger("trainhooks")


class StepCounterHook(SessionRunHook):
    """Logs ``global_step/sec`` every ``every_n_steps`` steps or every ``every_n_secs``.

    Exactly one of the two intervals, as in TF: to use seconds pass
    ``every_n_steps=None, every_n_secs=S``. The rate is measured between two triggers on a
    monotonic clock (or ``clock``, see ``SecondOrStepTimer``) and logged at INFO on the
    ``"trainhooks"`` logger. ``output_dir`` /
    ``summary_writer`` select TensorBoard output (``_write_summary``).

    Across restarts the step-based schedule continues: the step of the last report is
    saved inside each checkpoint (under ``name``) and restored, so a resumed run reports
    at the same steps as an uninterrupted one (every ``every_n_steps`` from the first
    report), its first rate measured from the restored step. Without a restored state (a
    new run, a time interval) the first step only starts the clock, as in TF.
    """

    def __init__(
        self,
        every_n_steps: int | None = 100,
        every_n_secs: float | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        summary_writer: Any = None,
        *,
        clock: Clock | None = None,
        name: str = "StepCounterHook",
    ) -> None:
        if (every_n_steps is None) == (every_n_secs is None):
            raise ValueError(
                "StepCounterHook needs exactly one of every_n_steps and every_n_secs (got "
                f"every_n_steps={every_n_steps!r}, every_n_secs={every_n_secs!r}); for a "
                "time interval pass every_n_steps=None, every_n_secs=SECONDS"
            )
        self._timer = SecondOrStepTimer(every_n_secs, every_n_steps, clock=clock)
        self._every_n_steps = every_n_steps
        self.name = name
        self._restored_report: int | None = None  # from load_state_dict, until used
        self._rate_from: int | None = None  # the step the first rate after a restore counts from
        self._output_dir = output_dir
        self._summary_writer = summary_writer
        self._owns_writer = False
        self._summary_tag = "global_step/sec"

    def state_dict(self) -> dict[str, Any]:
        """The step of the last report (or of the first step, which starts the clock): where
        the step-based schedule continues."""
        return {"last_trigger_step": self._timer.last_triggered_step()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        last = state["last_trigger_step"]
        self._restored_report = None if last is None else int(last)

    def after_create_session(self, session: HookSession, coord: Any) -> None:
        # Start a fresh measurement, also after a recoverable error re-created the session.
        self._timer.reset()
        self._rate_from = None
        last, self._restored_report = self._restored_report, None
        step = session.global_step
        if last is not None and self._every_n_steps is not None and last <= step:
            self._timer.update_last_triggered_step(last)  # the clock starts now
            self._rate_from = step

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        step = run_context.session.global_step
        timer = self._timer
        if timer.should_trigger_for_step(step):
            elapsed_secs, elapsed_steps = timer.update_last_triggered_step(step)
            if self._rate_from is not None:  # the first report after a restore
                elapsed_steps, self._rate_from = step - self._rate_from, None
            if elapsed_secs is not None and elapsed_secs > 0:
                self._log_and_record(elapsed_steps, elapsed_secs, step)  # type: ignore[arg-type]

    def _log_and_record(self, elapsed_steps: int, elapsed_secs: float, step: int) -> None:
        steps_per_sec = elapsed_steps / elapsed_secs
        _LOG.info("%s: %g", self._summary_tag, steps_per_sec)
        self._write_summary(step, steps_per_sec)

    def _write_summary(self, step: int, steps_per_sec: float) -> None:
        """Write ``steps_per_sec`` at ``step`` to TensorBoard (seam for the summary writer).

        A no-op whenever ``output_dir`` and ``summary_writer`` are both None. With
        ``output_dir`` the directory's shared event file is opened at the first write and
        closed when the session closes (``release``); without the ``tensorboard`` package
        the rate is only logged (one warning).
        """
        if self._summary_writer is None:
            if self._output_dir is None:
                return
            from trainhooks._summary import ScalarWriter

            try:
                self._summary_writer = ScalarWriter(self._output_dir)
            except ImportError as exc:
                _LOG.warning(
                    "StepCounterHook: not writing %s to TensorBoard: %s", self._summary_tag, exc
                )
                self._output_dir = None
                return
            self._owns_writer = True
        self._summary_writer.add_scalar(self._summary_tag, steps_per_sec, step)
        if hasattr(self._summary_writer, "flush"):
            self._summary_writer.flush()

    def release(self) -> None:
        """Close the event file this hook opened; the session calls this on every exit."""
        if self._owns_writer and self._summary_writer is not None:
            writer, self._summary_writer = self._summary_writer, None
            self._owns_writer = False
            writer.close()
