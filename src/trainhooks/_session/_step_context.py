"""``StepContext``: what ``MonitoredSession.run_step_fn`` hands to the step function."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainhooks._session._core import MonitoredSession

__all__ = ["StepContext", "StopRequested"]


class StopRequested(StopIteration):
    """Raised by ``StepContext.request_stop`` to leave the step function (TF's behaviour)."""


class StepContext:
    """What ``run_step_fn`` passes to the step function (TF's ``StepContext``).

    ``session`` is the monitored session (its ``state`` and ``global_step``);
    ``run_with_hooks(fn, ...)`` runs one hooked step; ``request_stop()`` leaves the step
    function at once and makes ``should_stop()`` true.
    """

    __slots__ = ("_session",)

    def __init__(self, session: MonitoredSession) -> None:
        self._session = session

    @property
    def session(self) -> MonitoredSession:
        return self._session

    def run_with_hooks(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` as one step with every hook's ``before_run`` / ``after_run``."""
        return self._session._run_with_hooks(fn, args, kwargs)

    def request_stop(self) -> None:
        """Stop the loop: raises out of the step function; ``run_step_fn`` returns None."""
        raise StopRequested("step_fn requested a stop")
