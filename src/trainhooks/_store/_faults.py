"""Named fault points, so crash tests can die or fail at exact moments of a save.

Disabled unless ``TRAINHOOKS_FAULTS`` is set (``"point=action[,point=action]"``) or a test
calls :func:`configure`. Actions: ``kill`` (SIGKILL this process), ``eio`` (raise
``OSError(EIO)``), ``sleep:SECONDS``, ``block`` (wait until a test calls :func:`release`;
:func:`wait_blocked` tells the test a thread got there, so a background save can be held
at an exact moment without sleeping); ``kill@N`` / ``eio@N`` / ``block@N`` act only on the
N-th hit. When disabled, :func:`fault_point` is one dict look-up on an empty dict.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from dataclasses import dataclass, field

__all__ = ["configure", "fault_point", "release", "wait_blocked"]


@dataclass
class _Fault:
    action: str
    argument: str | None
    on_hit: int | None
    hits: int = 0
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)


_faults: dict[str, _Fault] = {}


def configure(spec: str | None) -> None:
    """Replace the active faults with those in ``spec`` (``None`` or ``""`` disables all).

    Threads held at a ``block`` fault are let go first."""
    for fault in _faults.values():
        fault.released.set()
    _faults.clear()
    for item in filter(None, (part.strip() for part in (spec or "").split(","))):
        point, _, action = item.partition("=")
        on_hit = None
        if "@" in action:
            action, _, count = action.partition("@")
            on_hit = int(count)
        name, _, argument = action.partition(":")
        if name not in {"kill", "eio", "sleep", "block"}:
            raise ValueError(f"unknown fault action {action!r} in TRAINHOOKS_FAULTS={spec!r}")
        _faults[point.strip()] = _Fault(name, argument or None, on_hit)


def fault_point(name: str) -> None:
    """Act out the fault configured for ``name``, if any."""
    fault = _faults.get(name)
    if fault is None:
        return
    fault.hits += 1
    if fault.on_hit is not None and fault.hits != fault.on_hit:
        return
    if fault.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault.action == "eio":
        raise OSError(errno.EIO, f"injected I/O error at fault point {name!r}")
    elif fault.action == "sleep":
        time.sleep(float(fault.argument or 0))
    elif fault.action == "block":
        fault.reached.set()
        fault.released.wait()


def wait_blocked(name: str, timeout: float = 120.0) -> bool:
    """Wait until a thread is held at the ``block`` fault ``name``; False on timeout."""
    return _faults[name].reached.wait(timeout)


def release(name: str) -> None:
    """Let the threads held at the ``block`` fault ``name`` go on (and any later hit pass)."""
    _faults[name].released.set()


configure(os.environ.get("TRAINHOOKS_FAULTS"))
