"""Listeners, hooks and a tiny model that record what a session does; a quiet session."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, wait
from typing import Any

import numpy as np

from trainhooks import (
    CheckpointSaverHook,
    CheckpointSaverListener,
    MonitoredSession,
    MonitoredTrainingSession,
    RollbackRequested,
    Saver,
    SessionRunHook,
)
from trainhooks._store import _faults


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


class RollBackAt(SessionRunHook):
    """Undoes the run that reaches ``bad_step`` once, going back to ``to_step``."""

    def __init__(self, bad_step: int, to_step: int) -> None:
        self.bad_step = bad_step
        self.to_step = to_step
        self.done = False

    def after_run(self, run_context: Any, run_values: Any) -> None:
        if run_context.session.global_step == self.bad_step and not self.done:
            self.done = True
            raise RollbackRequested(self.to_step, (self.bad_step,), "test")


def roll_back_to_a_save_in_flight(directory: str | os.PathLike[str], point: str) -> None:
    """Run a session whose saver hook saves in the background every 2 steps, hold the save
    of step 4 at the fault ``point`` (before its commit) and let step 5 roll back to step 4:
    the save is let go only once someone waits for it, so the rollback's restore must wait
    for it (otherwise step 4 is not there yet and the restore fails)."""
    saver = DurableSaver(max_to_keep=None)
    counter = Counter()
    hook = CheckpointSaverHook(directory, save_steps=2, saver=saver, async_save=True)
    _faults.configure(f"{point}=block@3")  # hits: the saves of steps 0, 2, 4
    releaser = threading.Thread(target=_release_when_waited_on, args=(point, saver))
    releaser.start()
    try:
        with (
            saver,
            quiet_session(
                checkpoint_dir=directory,
                state=counter.state,
                chief_only_hooks=[hook],
                hooks=[RollBackAt(bad_step=5, to_step=4)],
            ) as sess,
        ):
            for _ in range(5):
                sess.run(counter.step)
            assert sess.restored_checkpoint is not None
            assert sess.restored_checkpoint.step == 4 and sess.global_step == 4
            assert counter.value == 4 and sess.skipped_steps == {5}
    finally:
        _faults.configure(None)  # lets a held save go if the test failed
        releaser.join()


def _release_when_waited_on(point: str, saver: DurableSaver) -> None:
    if not _faults.wait_blocked(point):
        return
    future = saver.futures[-1]
    deadline = time.monotonic() + 60
    while not future._waiters and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.001)
    _faults.release(point)
