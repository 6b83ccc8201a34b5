"""Preemption signals: handlers that only note the signal, installed for one session.

Why only a flag: a signal arrives between two bytecodes of whatever the main thread is
doing, often in the middle of a training step or of a checkpoint commit. Saving from the
handler would save a half-updated state, or start a second commit inside the first. So the
handler records the request and the session acts on it at the next step boundary (see
``MonitoredSession``). A second signal during that save only records it again: the commit
is never aborted.

Python runs signal handlers only in the main thread, and ``signal.signal`` refuses to be
called from any other. A session created in another thread installs nothing and says so;
the workaround is to install a handler in the main thread that calls the session's
``request_preemption()``.
"""

from __future__ import annotations

import logging
import signal
import threading
import weakref
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from trainhooks._exceptions import EXIT_PREEMPTED, Preempted

__all__ = ["PreemptionSignals", "log_preemption", "preempted", "signal_name"]

_LOG = logging.getLogger("trainhooks")


def signal_name(number: int | None) -> str:
    """``SIGTERM`` for 15; ``request_preemption()`` when no signal asked."""
    if number is None:
        return "request_preemption()"
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class PreemptionSignals:
    """Handlers for ``signals`` that call ``on_signal(signum)``; the previous ones come back.

    ``install()`` replaces the handlers (in the main thread only) and ``restore()`` puts
    the previous ones back; both may be called more than once. A bound method is held
    weakly: if its session was dropped without being closed, the next signal puts the
    previous handlers back and is delivered again to them, instead of being swallowed by
    a session that no longer exists.
    """

    def __init__(self, signals: Iterable[int], on_signal: Callable[[int | None], None]) -> None:
        self._signals = _checked(signals)
        self._on_signal: Callable[[], Callable[[int | None], None] | None]
        if hasattr(on_signal, "__self__"):
            self._on_signal = weakref.WeakMethod(on_signal)
        else:
            self._on_signal = lambda: on_signal
        self._previous: dict[int, Any] = {}

    @property
    def signals(self) -> tuple[int, ...]:
        """The signals this object handles (whether or not they could be installed)."""
        return self._signals

    def install(self) -> None:
        """Install the handlers, unless this is not the main thread (then warn, do nothing)."""
        if not self._signals or self._previous:
            return
        if threading.current_thread() is not threading.main_thread():
            _LOG.warning(
                "preemption signals %s are not handled: the session was created outside "
                "the main thread, and Python delivers signals to the main thread only. "
                "Install a handler there that calls session.request_preemption(), or pass "
                "preemption_signals=() to silence this warning.",
                ", ".join(signal_name(s) for s in self._signals),
            )
            return
        for number in self._signals:
            self._previous[number] = signal.signal(number, self._handle)

    def restore(self) -> None:
        """Put back the handlers that were installed before ``install()``."""
        previous, self._previous = self._previous, {}
        for number, handler in previous.items():
            # None: the previous handler was not installed from Python; the default is
            # the closest thing signal.signal accepts.
            signal.signal(number, signal.SIG_DFL if handler is None else handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        on_signal = self._on_signal()
        if on_signal is None:  # the session is gone: hand the signal to whoever was before
            self.restore()
            signal.raise_signal(signum)
            return
        on_signal(signum)


def log_preemption(signum: int | None, step: int) -> None:
    """The session is about to close after a preemption request."""
    _LOG.warning(
        "preemption requested (%s): ending the session at global step %d; every "
        "hook's end runs (the checkpoint saver saves this step)",
        signal_name(signum),
        step,
    )


def preempted(signum: int | None, step: int) -> Preempted:
    """The ``Preempted`` a session raises once closed after a preemption (logged)."""
    _LOG.warning(
        "preempted (%s): the session ended at global step %d; raising Preempted "
        "(exit status %d, EXIT_PREEMPTED) so that the job is requeued and resumes",
        signal_name(signum),
        step,
        EXIT_PREEMPTED,
    )
    return Preempted(step, signum)


def _checked(signals: Iterable[int]) -> tuple[int, ...]:
    result: list[int] = []
    for number in signals:
        if isinstance(number, bool) or not isinstance(number, int):
            raise TypeError(
                f"preemption_signals must hold signal numbers such as signal.SIGTERM, "
                f"got {number!r}"
            )
        if number in (getattr(signal, "SIGKILL", -1), getattr(signal, "SIGSTOP", -1)):
            raise ValueError(
                f"{signal_name(number)} cannot be handled by any process; the commit "
                "protocol already makes a SIGKILL lose nothing committed"
            )
        if number not in result:
            result.append(number)
    return tuple(result)
