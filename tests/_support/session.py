"""Listeners, hooks and a tiny model that record what a session does; a quiet session."""

from __future__ import annotations

from concurrent.futures import Future, wait
from typing import Any

import numpy as np

from trainhooks import (
    CheckpointSaverListener,
    MonitoredSession,
    MonitoredTrainingSession,
    Saver,
    SessionRunHook,
)


class RecordingListener(CheckpointSaverListener):
    """Appends ``name.method(step)`` to a shared trace; can ask to stop from ``after_save``."""

    def __init__(self, name: str, trace: list[str], stop_from_step: int | None = None) -> None:
        self.name = name
        self.trace = trace
        self.stop_from_step = stop_from_step
        self.seen: list[tuple[str, int, Any]] = []

    def begin(self) -> None:
        self.trace.append(f"{self.name}.begin")

    def before_save(self, session: Any, global_step_value: int) -> None:
        self.trace.append(f"{self.name}.before_save({global_step_value})")
        self.seen.append(("before_save", session.global_step, session.state))

    def after_save(self, session: Any, global_step_value: int) -> bool:
        self.trace.append(f"{self.name}.after_save({global_step_value})")
        return self.stop_from_step is not None and global_step_value >= self.stop_from_step

    def end(self, session: Any, global_step_value: int) -> None:
        self.trace.append(f"{self.name}.end({global_step_value})")


class RecordingHook(SessionRunHook):
    """Appends ``name.event`` for each hook event it gets."""

    def __init__(self, name: str, trace: list[str]) -> None:
        self.name = name
        self.trace = trace

    def begin(self) -> None:
        self.trace.append(f"{self.name}.begin")

    def after_create_session(self, session: Any, coord: Any) -> None:
        self.trace.append(f"{self.name}.after_create_session({session.global_step})")

    def before_run(self, run_context: Any) -> None:
        self.trace.append(f"{self.name}.before_run({run_context.session.global_step})")

    def after_run(self, run_context: Any, run_values: Any) -> None:
        self.trace.append(f"{self.name}.after_run({run_context.session.global_step})")

    def end(self, session: Any) -> None:
        self.trace.append(f"{self.name}.end({session.global_step})")


class Counter:
    """A tiny stateful model: one array that each training step increments by one."""

    def __init__(self) -> None:
        self.state = {"w": np.zeros(4, dtype=np.float32)}
        self.runs = 0

    def step(self) -> dict[str, float]:
        self.runs += 1
        self.state["w"] += 1.0
        return {"loss": float(self.state["w"][0])}

    @property
    def value(self) -> int:
        return int(self.state["w"][0])


def events_of(trace: list[str], name: str) -> list[str]:
    """The events of one recorder in a shared trace."""
    return [event for event in trace if event.startswith(f"{name}.")]


def save_pair(name: str, *steps: int) -> list[str]:
    """``name.before_save(S), name.after_save(S)`` for each step: one save, as traced."""
    return [e for s in steps for e in (f"{name}.before_save({s})", f"{name}.after_save({s})")]


def quiet_session(**kwargs: Any) -> MonitoredSession:
    """MonitoredTrainingSession without the default summary and step-counter hooks."""
    return MonitoredTrainingSession(save_summaries_steps=None, log_step_count_steps=None, **kwargs)


class DurableSaver(Saver):
    """A ``Saver`` whose background saves a step can wait for: a test step that calls
    ``wait_durable()`` first makes the boundary at which ``after_save`` runs deterministic."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{"max_to_keep": 5, **kwargs})
        self.futures: list[Future[Any]] = []

    def save_async(self, *args: Any, **kwargs: Any) -> Any:
        future = super().save_async(*args, **kwargs)
        self.futures.append(future)
        return future

    def wait_durable(self) -> None:
        wait(self.futures)
