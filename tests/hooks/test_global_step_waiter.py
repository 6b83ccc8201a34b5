"""GlobalStepWaiterHook: waits on a shared step source; alone in a process it never blocks."""

from __future__ import annotations

import logging

import trainhooks as th


def run_one_step(hook: th.GlobalStepWaiterHook) -> None:
    with th.MonitoredSession(hooks=[hook]) as session:
        session.run(lambda: None)
        session.run(lambda: None)


def test_polls_the_shared_step_until_it_reaches_the_target():
    shared = iter([0, 3, 7, 10, 12])
    seen = []

    def step_fn() -> int:
        seen.append(next(shared))
        return seen[-1]

    run_one_step(th.GlobalStepWaiterHook(10, step_fn=step_fn, poll_secs=1e-4))
    assert seen == [0, 3, 7, 10]  # asked only before the first run, until it was reached


def test_can_follow_the_chiefs_checkpoints(tmp_path):
    with th.Saver() as saver:
        saver.save({"w": [1.0]}, tmp_path, step=20)

    def chief_step() -> int:
        info = th.latest_checkpoint(tmp_path)
        return info.step if info else 0

    run_one_step(th.GlobalStepWaiterHook(20, step_fn=chief_step))


def test_without_a_shared_step_it_starts_at_once_and_says_why(caplog):
    caplog.set_level(logging.INFO)
    run_one_step(th.GlobalStepWaiterHook(1000))
    assert any("starting at once" in r.getMessage() for r in caplog.records)


def test_a_target_of_zero_never_asks():
    def step_fn() -> int:
        raise AssertionError("must not be called")

    run_one_step(th.GlobalStepWaiterHook(0, step_fn=step_fn))
