"""``GlobalStepWaiterHook``: hold a worker back until training has reached a step."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from trainhooks._session._hook import HookSession, SessionRunHook

__all__ = ["GlobalStepWaiterHook"]

logger = logging.getLogger(__name__)


class GlobalStepWaiterHook(SessionRunHook):
    """Before the first run, waits until the global step is at least ``wait_until_step``.

    TF uses it to start non-chief workers late, once the chief has trained a while. TF's
    global step is a variable shared by every worker; here each process counts its own
    steps, so a shared step must come from somewhere the other processes write: pass
    ``step_fn`` (e.g. ``lambda: getattr(trainhooks.latest_checkpoint(d), "step", 0)`` to
    follow the chief's checkpoints). The hook then polls it every ``poll_secs`` and logs
    while waiting.

    Without ``step_fn`` the source is this session's own ``global_step``, which nothing
    else advances while this process waits, so waiting could never end: in that
    single-process case the hook does not block and only logs that it went on at once.
    """

    def __init__(
        self,
        wait_until_step: int,
        *,
        step_fn: Callable[[], int] | None = None,
        poll_secs: float = 0.5,
        log_every_secs: float = 30.0,
    ) -> None:
        if poll_secs <= 0:
            raise ValueError(f"poll_secs must be positive, got {poll_secs}")
        self._wait_until_step = int(wait_until_step)
        self._step_fn = step_fn
        self._poll_secs = poll_secs
        self._log_every_secs = log_every_secs
        self._started = False

    def begin(self) -> None:
        self._started = self._wait_until_step <= 0

    def after_create_session(self, session: HookSession, coord: Any) -> None:
        # Waiting here rather than in before_run (TF) happens at the same moment — before
        # the first step — but leaves the per-step path free of this hook.
        if self._started:
            return
        self._started = True
        if self._step_fn is None:
            step = int(session.global_step)
            if step < self._wait_until_step:
                logger.info(
                    "GlobalStepWaiterHook: global step %d < %d, but no step_fn names a shared "
                    "step, so nothing else can advance it; starting at once.",
                    step,
                    self._wait_until_step,
                )
            return
        self._wait_for_shared_step(self._step_fn)

    def _wait_for_shared_step(self, step_fn: Callable[[], int]) -> None:
        last_log = None
        while (step := int(step_fn())) < self._wait_until_step:
            now = time.monotonic()
            if last_log is None or now - last_log >= self._log_every_secs:
                logger.info("Waiting for global step %d; it is %d.", self._wait_until_step, step)
                last_log = now
            time.sleep(self._poll_secs)
