"""``SecondOrStepTimer``: fire at most once every N seconds or once every N steps.

Hooks use it to decide when a step is due for work (a save, a log line). Its methods and
their meaning are TensorFlow's; the one difference is the clock: intervals are measured
with ``time.monotonic()`` instead of wall-clock time, so an NTP correction or a manual clock
change can neither suppress saves for hours nor trigger a burst of them.

The clock is an argument (``clock=``), which the time-based hooks pass through: a test or
a simulation drives time by handing in its own clock, with no sleeping and no patching.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "SecondOrStepTimer"]

# Seconds as a float, only ever compared with earlier readings of the same clock.
Clock = Callable[[], float]


class SecondOrStepTimer:
    """Triggers at most once every ``every_secs`` seconds or every ``every_steps`` steps.

    Exactly one of the two must be given. The first call to ``should_trigger_for_step``
    after creation or ``reset()`` always triggers; after that, a step triggers when
    ``step >= last_triggered_step + every_steps`` (steps) or when at least ``every_secs``
    seconds have passed since the last trigger (seconds), and never twice for the same step.
    Seconds are read from ``clock`` (default: ``time.monotonic``).
    """

    __slots__ = (
        "_clock",
        "_every_secs",
        "_every_steps",
        "_last_triggered_step",
        "_last_triggered_time",
    )

    def __init__(
        self,
        every_secs: float | None = None,
        every_steps: int | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        if every_secs is None and every_steps is None:
            raise ValueError(
                "SecondOrStepTimer needs an interval: pass every_secs=SECONDS or every_steps=N"
            )
        if every_secs is not None and every_steps is not None:
            raise ValueError(
                f"SecondOrStepTimer takes one interval, got both every_secs={every_secs!r} "
                f"and every_steps={every_steps!r}; pass only one"
            )
        if every_secs is not None and not every_secs > 0:
            raise ValueError(f"every_secs must be > 0 seconds, got {every_secs!r}")
        if every_steps is not None and not every_steps > 0:
            raise ValueError(f"every_steps must be a positive number of steps, got {every_steps!r}")
        self._clock = time.monotonic if clock is None else clock
        self._every_secs = every_secs
        self._every_steps = every_steps
        self._last_triggered_step: int | None = None
        self._last_triggered_time: float | None = None

    def reset(self) -> None:
        """Forget the last trigger: the next ``should_trigger_for_step`` returns True."""
        self._last_triggered_step = None
        self._last_triggered_time = None

    def should_trigger_for_step(self, step: int) -> bool:
        """Whether ``step`` is due (see the class docstring); does not record a trigger."""
        last_step = self._last_triggered_step
        if last_step is None:
            return True
        if last_step == step:
            return False
        if self._every_steps is not None:
            return step >= last_step + self._every_steps
        return self._clock() >= self._last_triggered_time + self._every_secs  # type: ignore[operator]

    def update_last_triggered_step(self, step: int) -> tuple[float | None, int | None]:
        """Record a trigger at ``step`` now.

        Returns ``(elapsed_secs, elapsed_steps)`` since the previous trigger, or
        ``(None, None)`` for the first one.
        """
        now = self._clock()
        if self._last_triggered_step is None or self._last_triggered_time is None:
            elapsed: tuple[float | None, int | None] = (None, None)
        else:
            elapsed = (now - self._last_triggered_time, step - self._last_triggered_step)
        self._last_triggered_step = step
        self._last_triggered_time = now
        return elapsed

    def last_triggered_step(self) -> int | None:
        """The step of the last trigger, or None if there was none since creation/reset."""
        return self._last_triggered_step
