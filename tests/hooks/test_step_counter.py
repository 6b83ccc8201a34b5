"""StepCounterHook: steps/sec on the "trainhooks" logger, measured on the monotonic clock."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pytest

from trainhooks import CheckpointSaverHook, MonitoredSession, StepCounterHook, StopAtStepHook


def rates_logged(caplog: pytest.LogCaptureFixture) -> list[float]:
    return [
        float(r.getMessage().split(": ")[1])
        for r in caplog.records
        if r.name == "trainhooks" and r.getMessage().startswith("global_step/sec: ")
    ]


class StepClock:
    """A clock the training step advances by ``secs_per_step`` (no sleeping)."""

    def __init__(self, secs_per_step: float) -> None:
        self.now = 0.0
        self.secs_per_step = secs_per_step

    def __call__(self) -> float:
        return self.now

    def step(self) -> None:
        self.now += self.secs_per_step


def run_with_clock(hook: StepCounterHook, clock: StepClock, *, steps: int) -> None:

    with MonitoredSession(hooks=[hook, StopAtStepHook(last_step=steps)]) as sess:
        while not sess.should_stop():
            sess.run(clock.step)


def test_logs_steps_per_second_every_n_steps(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trainhooks")
    clock = StepClock(secs_per_step=0.5)

    run_with_clock(StepCounterHook(every_n_steps=5, clock=clock), clock, steps=16)

    # first trigger at step 1 starts the measurement; then steps 6, 11, 16
    assert rates_logged(caplog) == [2.0, 2.0, 2.0]


def test_logs_every_n_seconds(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trainhooks")
    clock = StepClock(secs_per_step=0.25)

    hook = StepCounterHook(every_n_steps=None, every_n_secs=1.0, clock=clock)
    run_with_clock(hook, clock, steps=9)

    assert rates_logged(caplog) == [4.0, 4.0]


def test_write_summary_seam_receives_step_and_rate() -> None:
    written: list[tuple[int, float]] = []

    class Capturing(StepCounterHook):
        def _write_summary(self, step: int, steps_per_sec: float) -> None:
            written.append((step, steps_per_sec))

    clock = StepClock(secs_per_step=0.1)
    run_with_clock(Capturing(every_n_steps=2, clock=clock), clock, steps=5)

    assert written == [(3, pytest.approx(10.0)), (5, pytest.approx(10.0))]


@pytest.mark.parametrize(
    "kwargs",
    [{"every_n_steps": None}, {"every_n_secs": 5.0}],
    ids=["neither", "both (every_n_steps defaults to 100)"],
)
def test_needs_exactly_one_interval(kwargs: dict[str, float | None]) -> None:
    with pytest.raises(ValueError, match="every_n_steps=None, every_n_secs=SECONDS"):
        StepCounterHook(**kwargs)


class Crash(Exception):
    """Stands for the process dying mid-run: the session exits without ``end``."""


def reports(directory, *, last_step: int, crash_at: int | None = None) -> list[tuple[int, float]]:
    """The (step, rate) reports of one session resuming from ``directory``."""
    written: list[tuple[int, float]] = []

    class Capturing(StepCounterHook):
        def _write_summary(self, step: int, steps_per_sec: float) -> None:
            written.append((step, steps_per_sec))

    clock = StepClock(secs_per_step=0.5)
    saver = CheckpointSaverHook(directory, save_steps=25)
    hooks = [Capturing(every_n_steps=100, clock=clock), saver, StopAtStepHook(last_step=last_step)]
    with (
        contextlib.suppress(Crash),
        MonitoredSession(hooks=hooks, state={"w": np.zeros(1)}, checkpoint_dir=directory) as sess,
    ):
        while not sess.should_stop():
            sess.run(clock.step)
            if sess.global_step == crash_at:
                raise Crash
    return written


def test_a_resumed_run_reports_at_the_steps_of_an_uninterrupted_one(tmp_path) -> None:
    uninterrupted = reports(tmp_path / "a", last_step=400)
    assert [step for step, _ in uninterrupted] == [101, 201, 301]

    reports(tmp_path / "b", last_step=400, crash_at=260)  # last checkpoint: step 250
    resumed = reports(tmp_path / "b", last_step=400)
    # the schedule goes on from the report at 201; the first rate counts the 51 steps
    # run since the restore at 250, not the 100 since that report
    assert resumed == [(301, pytest.approx(2.0))]
