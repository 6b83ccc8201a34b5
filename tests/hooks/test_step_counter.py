"""StepCounterHook: steps/sec on the "trainhooks" logger, measured on the monotonic clock."""

from __future__ import annotations

import logging

import pytest

from trainhooks import MonitoredSession, StepCounterHook, StopAtStepHook


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
