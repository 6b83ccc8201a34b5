"""Preemption signals in one process: the handler only notes the signal, the session saves
at the next step boundary, ends, and leaves with ``Preempted`` (exit status 75).

The signals are real (``os.kill`` of this very process). Every test runs with a guard
handler installed first, so that a session that failed to install its own records the
signal in the guard instead of terminating the test run; the guard is also the "previous
handler" the session must put back.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trainhooks as th
from _support.session import RecordingListener, events_of, quiet_session


class Guard:
    """A recording handler for SIGTERM and SIGUSR1, installed for one test."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def __call__(self, signum: int, frame: Any) -> None:
        self.received.append(signum)


@pytest.fixture
def guard() -> Iterator[Guard]:
    handler = Guard()
    signals = (signal.SIGTERM, signal.SIGUSR1)
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield handler
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def stepper(state: dict[str, Any], signal_at: int | None = None, sig: int = signal.SIGTERM):
    """A step that increments ``w``; at run ``signal_at`` it signals this process mid-step."""

    def step() -> dict[str, float]:
        state["w"] += 1.0
        if int(state["w"][0]) == signal_at:
            os.kill(os.getpid(), sig)
            state["w"] += 0.5  # the rest of the step still runs, then the boundary
        return {"loss": float(state["w"][0])}

    return step


def saving_session(directory: Path, state: dict[str, Any], trace: list[str], **kwargs: Any):
    saver = th.CheckpointSaverHook(
        directory, save_steps=100, listeners=[RecordingListener("a", trace)]
    )
    return quiet_session(checkpoint_dir=directory, state=state, chief_only_hooks=[saver], **kwargs)


def test_sigterm_mid_step_saves_that_step_ends_and_leaves_with_preempted(tmp_path, guard):
    state = {"w": np.zeros(2)}
    trace: list[str] = []
    step = stepper(state, signal_at=3)
    with pytest.raises(th.Preempted) as caught, saving_session(tmp_path, state, trace) as sess:
        while not sess.should_stop():
            sess.run(step)
    assert caught.value.code == th.EXIT_PREEMPTED == 75
    assert caught.value.step == 3 and caught.value.signal_number == signal.SIGTERM
    assert sess.preempted and sess.should_stop()
    # the step the signal interrupted completed; no further step ran; its save is durable
    assert state["w"][0] == 3.5
    assert [info.step for info in th.list_checkpoints(tmp_path)] == [0, 3]
    assert th.load(th.latest_checkpoint(tmp_path).path)["w"].tolist() == [3.5, 3.5]
    assert events_of(trace, "a") == [
        "a.begin",
        "a.before_save(0)",
        "a.after_save(0)",
        "a.before_save(3)",
        "a.after_save(3)",
        "a.end(3)",
    ]
    assert guard.received == []  # the session's handler took the signal
    assert signal.getsignal(signal.SIGTERM) is guard  # and the previous one is back


def test_preempted_exits_the_process_with_status_75_when_not_caught(tmp_path):
    code = (
        "import os, signal, numpy as np, trainhooks as th\n"
        "state = {'w': np.zeros(1)}\n"
        "def step():\n"
        "    state['w'] += 1\n"
        "    if state['w'][0] == 2: os.kill(os.getpid(), signal.SIGTERM)\n"
        f"with th.MonitoredTrainingSession(checkpoint_dir={str(tmp_path)!r}, state=state,\n"
        "        save_checkpoint_steps=10, save_summaries_steps=None) as sess:\n"
        "    while not sess.should_stop(): sess.run(step)\n"
        "print('after the with block: must not run')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == th.EXIT_PREEMPTED, result.stderr
    assert "must not run" not in result.stdout
    assert "Traceback" not in result.stderr  # a SystemExit: no traceback, only the status
    assert th.latest_checkpoint(tmp_path).step == 2


def test_a_second_signal_during_the_save_does_not_abort_the_commit(tmp_path, guard):
    class SignalAgainWhileSaving(th.CheckpointSaverListener):
        def before_save(self, session: Any, global_step_value: int) -> None:
            if global_step_value == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # while the preemption save runs

    state = {"w": np.zeros(2)}
    saver = th.CheckpointSaverHook(tmp_path, save_steps=100, listeners=[SignalAgainWhileSaving()])
    step = stepper(state, signal_at=3)
    with (
        pytest.raises(th.Preempted),
        quiet_session(checkpoint_dir=tmp_path, state=state, chief_only_hooks=[saver]) as sess,
    ):
        while not sess.should_stop():
            sess.run(step)
    latest = th.latest_checkpoint(tmp_path)
    assert latest.step == 3
    th.verify_checkpoint(latest.path)
    assert guard.received == []  # our handler was still installed during the save


def test_a_signal_between_steps_stops_the_loop_and_the_with_block_saves_and_raises(tmp_path, guard):
    state = {"w": np.zeros(2)}
    trace: list[str] = []
    step = stepper(state)
    with pytest.raises(th.Preempted) as caught, saving_session(tmp_path, state, trace) as sess:
        while not sess.should_stop():
            sess.run(step)
            if sess.global_step == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # e.g. while the loop loads data
        assert sess.global_step == 2  # should_stop() turned true: the loop ended itself
    assert caught.value.step == 2
    assert th.latest_checkpoint(tmp_path).step == 2
    assert events_of(trace, "a")[-1] == "a.end(2)"


def test_close_of_a_preempted_session_saves_and_raises_without_a_with_block(tmp_path, guard):
    state = {"w": np.zeros(2)}
    sess = saving_session(tmp_path, state, [])
    sess.run(stepper(state))
    os.kill(os.getpid(), signal.SIGTERM)
    assert sess.preempted and sess.should_stop()
    with pytest.raises(th.Preempted):
        sess.close()
    sess.close()  # closing twice stays a no-op
    assert th.latest_checkpoint(tmp_path).step == 1


def test_run_after_the_signal_saves_before_running_another_step(tmp_path, guard):
    state = {"w": np.zeros(2)}
    sess = saving_session(tmp_path, state, [])
    step = stepper(state)
    sess.run(step)
    os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(th.Preempted) as caught:
        sess.run(step)  # a loop that does not check should_stop(): no step runs
    assert caught.value.step == 1 and state["w"][0] == 1.0
    assert th.latest_checkpoint(tmp_path).step == 1


def test_sigusr1_can_be_the_preemption_signal(tmp_path, guard):
    state = {"w": np.zeros(2)}
    step = stepper(state, signal_at=2, sig=signal.SIGUSR1)
    session = saving_session(tmp_path, state, [], preemption_signals=[signal.SIGUSR1])
    assert signal.getsignal(signal.SIGTERM) is guard  # only the signals asked for
    with pytest.raises(th.Preempted) as caught, session as sess:
        while not sess.should_stop():
            sess.run(step)
    assert caught.value.signal_number == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) is guard


def test_sigterm_is_handled_by_default_only_with_a_checkpoint_dir(tmp_path, guard):
    with quiet_session(checkpoint_dir=tmp_path, state={"w": np.zeros(1)}):
        assert signal.getsignal(signal.SIGTERM) is not guard
    assert signal.getsignal(signal.SIGTERM) is guard
    with quiet_session(state={"w": np.zeros(1)}):
        assert signal.getsignal(signal.SIGTERM) is guard
    with quiet_session(checkpoint_dir=tmp_path, state={"w": np.zeros(1)}, preemption_signals=()):
        assert signal.getsignal(signal.SIGTERM) is guard
    with th.MonitoredSession(state={"w": np.zeros(1)}, checkpoint_dir=tmp_path):
        assert signal.getsignal(signal.SIGTERM) is guard  # MonitoredSession: opt-in only


def test_the_previous_handler_is_back_after_an_exception_and_after_a_failed_creation(
    tmp_path, guard
):
    class Boom(Exception):
        pass

    def failing_step() -> None:
        raise Boom

    with pytest.raises(Boom), quiet_session(checkpoint_dir=tmp_path, state={}) as sess:
        sess.run(failing_step)
    assert signal.getsignal(signal.SIGTERM) is guard

    class FailingBegin(th.SessionRunHook):
        def begin(self) -> None:
            raise Boom

    with pytest.raises(Boom):
        quiet_session(checkpoint_dir=tmp_path, state={}, hooks=[FailingBegin()])
    assert signal.getsignal(signal.SIGTERM) is guard


def test_outside_the_main_thread_nothing_is_installed_and_request_preemption_works(
    tmp_path, guard, caplog
):
    caplog.set_level(logging.WARNING, logger="trainhooks")
    state = {"w": np.zeros(2)}
    outcome: dict[str, Any] = {}

    def train() -> None:
        try:
            with saving_session(tmp_path, state, []) as sess:
                outcome["handler"] = signal.getsignal(signal.SIGTERM)
                while not sess.should_stop():
                    sess.run(stepper(state))
                    if sess.global_step == 2:
                        sess.request_preemption()  # what a main-thread handler would call
        except th.Preempted as exc:
            outcome["preempted"] = exc

    worker = threading.Thread(target=train)
    worker.start()
    worker.join()
    assert outcome["handler"] is guard
    assert "outside the main thread" in caplog.text
    assert outcome["preempted"].step == 2 and outcome["preempted"].signal_number is None
    assert th.latest_checkpoint(tmp_path).step == 2


def test_signals_that_cannot_be_handled_are_refused(tmp_path):
    with pytest.raises(ValueError, match="SIGKILL"):
        th.MonitoredSession(preemption_signals=[signal.SIGKILL])
    with pytest.raises(TypeError, match="signal numbers"):
        th.MonitoredSession(preemption_signals=["SIGTERM"])  # type: ignore[list-item]


def test_a_session_dropped_without_close_hands_the_signal_back_to_the_previous_handler(
    tmp_path, guard
):
    import gc

    sess = quiet_session(checkpoint_dir=tmp_path, state={"w": np.zeros(1)})
    assert signal.getsignal(signal.SIGTERM) is not guard
    del sess
    gc.collect()
    os.kill(os.getpid(), signal.SIGTERM)
    assert guard.received == [signal.SIGTERM]  # not swallowed by a session that is gone
    assert signal.getsignal(signal.SIGTERM) is guard
