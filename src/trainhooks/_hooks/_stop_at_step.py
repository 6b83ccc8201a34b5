"""``StopAtStepHook``: request a stop once the global step reaches a limit."""

from __future__ import annotations

from typing import Any

from trainhooks._session._hook import (
    HookSession,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
)

__all__ = ["StopAtStepHook"]


class StopAtStepHook(SessionRunHook):
    """Stops training at ``last_step`` (absolute) or after ``num_steps`` more steps.

    ``num_steps`` counts from the global step at session creation (a restored run gets
    ``num_steps`` more); give exactly one of the two, else ``ValueError``.

    Deviation from TF: when the session is created at or past ``last_step`` (a restart
    of a finished run) the stop is requested at creation, so no step runs; TF runs one
    extra step and saves once more. The save at creation and ``end()`` still happen.
    """

    def __init__(self, num_steps: int | None = None, last_step: int | None = None) -> None:
        if num_steps is None and last_step is None:
            raise ValueError("StopAtStepHook needs one of num_steps or last_step")
        if num_steps is not None and last_step is not None:
            raise ValueError(
                f"StopAtStepHook takes only one of num_steps ({num_steps!r}) and "
                f"last_step ({last_step!r}): num_steps counts from the restored step, "
                "last_step is absolute"
            )
        if num_steps is not None and num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps!r}")
        self._num_steps = num_steps
        self._last_step = last_step

    @property
    def last_step(self) -> int | None:
        """The absolute step to stop at (known once the session exists for ``num_steps``)."""
        return self._last_step

    def after_create_session(self, session: HookSession, coord: Any) -> None:
        step = session.global_step
        if self._last_step is None and self._num_steps is not None:
            # Computed once, as in TF: a session re-created after a recoverable error
            # keeps the original target.
            self._last_step = step + self._num_steps
        if self._last_step is not None and step >= self._last_step:
            coord.request_stop()

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        last_step = self._last_step
        if last_step is not None and run_context.session.global_step >= last_step:
            run_context.request_stop()
