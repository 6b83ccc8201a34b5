"""SecondOrStepTimer: TF's trigger rules on a monotonic clock."""

from __future__ import annotations

import time

import pytest

from trainhooks import SecondOrStepTimer


class FakeClock:
    """A monotonic clock the test moves by hand (no sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_by_default_the_timer_follows_the_monotonic_clock_not_the_wall_clock(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "monotonic", clock)
    timer = SecondOrStepTimer(every_secs=60)  # no clock given: time.monotonic
    timer.update_last_triggered_step(0)
    monkeypatch.setattr(time, "time", lambda: 4e9)  # the wall clock leaps a century ahead

    assert not timer.should_trigger_for_step(1)
    clock.now += 60
    assert timer.should_trigger_for_step(1)


def test_first_step_always_triggers_then_every_n_steps() -> None:
    timer = SecondOrStepTimer(every_steps=3)
    assert timer.should_trigger_for_step(7)
    timer.update_last_triggered_step(7)

    assert [s for s in range(7, 14) if timer.should_trigger_for_step(s)] == [10, 11, 12, 13]
    assert timer.last_triggered_step() == 7


def test_never_triggers_twice_for_the_same_step(clock: FakeClock) -> None:
    timer = SecondOrStepTimer(every_secs=1.0, clock=clock)
    timer.update_last_triggered_step(5)
    clock.now += 100

    assert not timer.should_trigger_for_step(5)
    assert timer.should_trigger_for_step(6)


def test_seconds_trigger_once_the_interval_has_elapsed(clock: FakeClock) -> None:
    timer = SecondOrStepTimer(every_secs=2.5, clock=clock)
    timer.update_last_triggered_step(0)

    clock.now += 2.4
    assert not timer.should_trigger_for_step(1)
    clock.now += 0.1
    assert timer.should_trigger_for_step(1)


def test_update_returns_elapsed_seconds_and_steps(clock: FakeClock) -> None:
    timer = SecondOrStepTimer(every_steps=10, clock=clock)
    assert timer.update_last_triggered_step(3) == (None, None)
    clock.now += 4.0

    assert timer.update_last_triggered_step(13) == (4.0, 10)


def test_reset_makes_the_next_step_trigger() -> None:
    timer = SecondOrStepTimer(every_steps=100)
    timer.update_last_triggered_step(1)
    timer.reset()

    assert timer.last_triggered_step() is None
    assert timer.should_trigger_for_step(2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "needs an interval"),
        ({"every_secs": 1, "every_steps": 1}, "only one"),
        ({"every_steps": 0}, "positive"),
        ({"every_secs": -1.0}, "> 0"),
    ],
)
def test_invalid_intervals_are_value_errors(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SecondOrStepTimer(**kwargs)
