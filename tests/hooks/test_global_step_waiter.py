"""GlobalStepWaiterHook: waits on a shared step source; alone in a process it never blocks."""

from __future__ import annotations

import logging

import trainhooks as th


def run_one_step(hook: th.GlobalStepWaiterHook, events: list[str] | None = None) -> None:
    """Run one step (recording ``"step"`` in ``events``) and a second one."""
    with th.MonitoredSession(hooks=[hook]) as session:
        session.run(lambda: events.append("step") if events is not None else None)
        session.run(lambda: None)


def test_the_first_step_waits_until_the_shared_step_reaches_the_target():
    shared = iter([0, 3, 7, 10, 12])
    events: list[str] = []

    def step_fn() -> int:
        value = next(shared)
        events.append(f"shared={value}")
        return value

    run_one_step(th.GlobalStepWaiterHook(10, step_fn=step_fn, poll_secs=1e-4), events)
    # polled until 10 was reached, then the first step ran; never asked again after it
    assert events == ["shared=0", "shared=3", "shared=7", "shared=10", "step"]


def test_a_worker_follows_the_chiefs_checkpoints(tmp_path):
    events: list[str] = []

    def chief_step() -> int:
        info = th.latest_checkpoint(tmp_path)
        step = info.step if info else 0
        events.append(f"chief at {step}")
        if len(events) == 2:  # the chief commits step 20 while the worker waits
            with th.Saver() as saver:
                saver.save({"w": [1.0]}, tmp_path, step=20)
        return step

    run_one_step(th.GlobalStepWaiterHook(20, step_fn=chief_step, poll_secs=1e-4), events)
    assert events == ["chief at 0", "chief at 0", "chief at 20", "step"]


def test_without_a_shared_step_it_starts_at_once_and_says_why(caplog):
    caplog.set_level(logging.INFO)
    run_one_step(th.GlobalStepWaiterHook(1000))
    assert any("starting at once" in r.getMessage() for r in caplog.records)


def test_a_target_of_zero_never_asks():
    def step_fn() -> int:
        raise AssertionError("must not be called")

    run_one_step(th.GlobalStepWaiterHook(0, step_fn=step_fn))
