"""LoggingTensorHook: TF's schedule, tag order, formatter and at_end, in real sessions."""

from __future__ import annotations

import logging

import pytest
import torch

import trainhooks as th

LOGGER = "trainhooks._hooks._logging_tensor"


def run_steps(hook: th.LoggingTensorHook, n: int) -> None:
    values = iter(range(100))

    def step() -> dict:
        i = next(values)
        return {"loss": torch.tensor(float(i)), "acc": i / 10, "count": i}

    with th.MonitoredSession(hooks=[hook, th.StopAtStepHook(last_step=n)]) as session:
        while not session.should_stop():
            session.run(step)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_logs_every_n_iter_starting_with_the_first_run(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    run_steps(th.LoggingTensorHook(["loss"], every_n_iter=3), 7)
    lines = messages(caplog)
    assert [line.split(" (")[0] for line in lines] == ["loss = 0.0", "loss = 3.0", "loss = 6.0"]
    assert "sec)" in lines[1]  # elapsed time since the previous line, as TF prints it


def test_dict_tags_are_logged_in_sorted_order_and_list_in_given_order(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    run_steps(th.LoggingTensorHook({"b_loss": "loss", "a_acc": "acc"}, every_n_iter=10), 1)
    run_steps(th.LoggingTensorHook(["loss", "acc"], every_n_iter=10), 1)
    assert messages(caplog) == ["a_acc = 0.0, b_loss = 0.0", "loss = 0.0, acc = 0.0"]


def test_formatter_receives_the_tagged_values(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    seen = []

    def formatter(values: dict) -> str:
        seen.append(values)
        return f"custom {int(values['n'])}"

    run_steps(th.LoggingTensorHook({"n": "count"}, every_n_iter=2, formatter=formatter), 3)
    assert messages(caplog) == ["custom 0", "custom 2"]
    assert seen == [{"n": 0}, {"n": 2}]


def test_at_end_alone_logs_once_with_the_last_step_values(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    run_steps(th.LoggingTensorHook(["count"], at_end=True), 5)
    assert messages(caplog) == ["count = 4"]


def test_at_end_is_skipped_when_the_session_fails(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    hook = th.LoggingTensorHook(["x"], at_end=True)
    with pytest.raises(ZeroDivisionError), th.MonitoredSession(hooks=[hook]) as session:
        session.run(lambda: {"x": 1})
        session.run(lambda: 1 / 0)
    assert messages(caplog) == []


def test_every_n_secs_follows_its_clock(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    now = [100.0]
    hook = th.LoggingTensorHook(["count"], every_n_secs=10, clock=lambda: now[0])
    counter = iter(range(10))
    with th.MonitoredSession(hooks=[hook]) as session:
        for advance in (0, 4, 4, 4, 20):  # logged at t=100, 112, 132
            now[0] += advance
            i = next(counter)
            session.run(lambda i=i: {"count": i})
    assert [m.split(" (")[0] for m in messages(caplog)] == ["count = 0", "count = 3", "count = 4"]


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"every_n_iter": 1, "every_n_secs": 1}, {"every_n_iter": 0}, {"at_end": False}],
)
def test_invalid_schedules_are_rejected(kwargs):
    with pytest.raises(ValueError):
        th.LoggingTensorHook(["loss"], **kwargs)


def test_a_missing_name_says_what_the_step_returned():
    hook = th.LoggingTensorHook(["nope"], every_n_iter=1)
    with pytest.raises(KeyError, match="nope"), th.MonitoredSession(hooks=[hook]) as session:
        session.run(lambda: {"loss": 1.0})


def test_at_end_with_a_schedule_logs_both(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    run_steps(th.LoggingTensorHook(["count"], every_n_iter=2, at_end=True), 5)
    assert [m.split(" (")[0] for m in messages(caplog)] == [
        "count = 0",
        "count = 2",
        "count = 4",
        "count = 4",
    ]
