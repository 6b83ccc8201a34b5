"""MonitoredSession: lifecycle, hooks, recovery, fetches, ``run_step_fn``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from _support.session import (
    Counter,
    RecordingHook,
    RecordingListener,
    events_of,
    quiet_session,
    save_pair,
)
from trainhooks import (
    CheckpointSaverHook,
    MonitoredSession,
    MonitoredTrainingSession,
    SessionRunArgs,
    SessionRunHook,
    SingularMonitoredSession,
    StopAtStepHook,
    list_checkpoints,
)


def test_hook_events_come_in_tf_order_and_end_only_on_normal_exit(
    trace: list[str], counter: Counter
) -> None:
    with quiet_session(hooks=[RecordingHook("h", trace), StopAtStepHook(last_step=2)]) as sess:
        while not sess.should_stop():
            sess.run(counter.step)

    assert trace == [
        "h.begin",
        "h.after_create_session(0)",
        "h.before_run(0)",
        "h.after_run(1)",
        "h.before_run(1)",
        "h.after_run(2)",
        "h.end(2)",
    ]


def test_exception_in_step_propagates_and_skips_hook_end(
    trace: list[str], counter: Counter
) -> None:
    def boom() -> None:
        raise KeyError("lost")

    hooks = [RecordingHook("h", trace)]
    with pytest.raises(KeyError, match="lost"), quiet_session(hooks=hooks) as sess:
        sess.run(boom)

    assert "h.end" not in " ".join(trace)
    assert sess.should_stop()  # closed


def test_stop_iteration_in_the_loop_ends_training_normally(
    tmp_path: Path, trace: list[str], counter: Counter
) -> None:
    batches = iter(range(3))
    hook = CheckpointSaverHook(tmp_path, save_steps=100, listeners=[RecordingListener("a", trace)])

    with quiet_session(state=counter.state, chief_only_hooks=[hook]) as sess:
        while not sess.should_stop():
            next(batches)  # data runs out after 3 batches, as TF's OutOfRangeError
            sess.run(counter.step)

    assert trace == ["a.begin", *save_pair("a", 0, 3), "a.end(3)"]


def test_close_runs_end_once_and_a_second_close_is_a_no_op(
    trace: list[str], counter: Counter
) -> None:
    sess = quiet_session(hooks=[RecordingHook("h", trace)])
    sess.run(counter.step)
    sess.close()
    sess.close()

    assert events_of(trace, "h")[-1] == "h.end(1)"
    assert sum(e.startswith("h.end") for e in trace) == 1
    with pytest.raises(RuntimeError, match="closed session"):
        sess.run(counter.step)


def test_run_after_should_stop_raises(counter: Counter) -> None:
    with quiet_session(hooks=[StopAtStepHook(last_step=1)]) as sess:
        sess.run(counter.step)
        assert sess.should_stop()
        with pytest.raises(RuntimeError, match="should_stop"):
            sess.run(counter.step)


def test_run_passes_arguments_and_returns_the_step_result() -> None:
    with quiet_session() as sess:
        assert sess.run(lambda x, *, y: {"sum": x + y}, 2, y=3) == {"sum": 5}
        assert sess.global_step == 1


def test_steps_per_run_advances_global_step_and_saves_follow_it(
    tmp_path: Path, trace: list[str], counter: Counter
) -> None:
    hook = CheckpointSaverHook(tmp_path, save_steps=3, listeners=[RecordingListener("a", trace)])
    runs = 0
    with quiet_session(
        state=counter.state,
        chief_only_hooks=[hook],
        hooks=[StopAtStepHook(last_step=10)],
        steps_per_run=2,
    ) as sess:
        while not sess.should_stop():
            sess.run(counter.step)
            runs += 1

    assert runs == 5
    assert trace == ["a.begin", *save_pair("a", 0, 4, 8, 10), "a.end(10)"]


@pytest.mark.parametrize("steps_per_run", [0, -1, 1.5])
def test_steps_per_run_must_be_a_positive_int(steps_per_run: Any) -> None:
    with pytest.raises(ValueError, match="steps_per_run"):
        MonitoredTrainingSession(steps_per_run=steps_per_run)


def test_recoverable_error_recreates_session_from_latest_checkpoint(
    tmp_path: Path, trace: list[str], counter: Counter
) -> None:
    failed = []

    def flaky_step() -> dict[str, float]:
        if counter.runs == 5 and not failed:  # the 6th call fails once, after step 5
            failed.append(True)
            counter.runs += 1
            raise ConnectionError("worker preempted")
        return counter.step()

    hook = CheckpointSaverHook(tmp_path, save_steps=2, listeners=[RecordingListener("a", trace)])
    with quiet_session(
        checkpoint_dir=tmp_path,
        state=counter.state,
        chief_only_hooks=[hook, RecordingHook("h", trace)],
        hooks=[StopAtStepHook(last_step=8)],
        recoverable_errors=(ConnectionError,),
    ) as sess:
        while not sess.should_stop():
            sess.run(flaky_step)

    assert [e for e in trace if "after_create_session" in e] == [
        "h.after_create_session(0)",
        "h.after_create_session(4)",  # restored from the latest checkpoint
    ]
    assert events_of(trace, "a") == [
        "a.begin",
        *save_pair("a", 0, 2, 4),
        *save_pair("a", 4),  # the creation save after recovery (not rewritten on disk)
        *save_pair("a", 6, 8),
        "a.end(8)",
    ]
    assert counter.value == 8  # steps 5 was redone from the restored state at 4


def test_errors_not_listed_as_recoverable_propagate(counter: Counter) -> None:
    def step() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError), quiet_session(recoverable_errors=(TimeoutError,)) as sess:
        sess.run(step)


class FetchingHook(SessionRunHook):
    def __init__(self, fetches: Any) -> None:
        self.fetches = fetches
        self.results: list[Any] = []

    def before_run(self, run_context: Any) -> SessionRunArgs:
        return SessionRunArgs(self.fetches)

    def after_run(self, run_context: Any, run_values: Any) -> None:
        self.results.append(run_values.results)


class ResultHook(SessionRunHook):
    def __init__(self) -> None:
        self.results: list[Any] = []

    def after_run(self, run_context: Any, run_values: Any) -> None:
        self.results.append((run_values.results, run_values.step_result))


def test_fetches_named_in_session_run_args_reach_after_run() -> None:
    one, many, named, silent = (
        FetchingHook("loss"),
        FetchingHook(["loss", "acc"]),
        FetchingHook({"l": "loss"}),
        ResultHook(),
    )
    with quiet_session(hooks=[one, many, named, silent]) as sess:
        sess.run(lambda: {"loss": 0.5, "acc": 0.9, "other": 1})

    assert one.results == [0.5]
    assert many.results == [[0.5, 0.9]]
    assert named.results == [{"l": 0.5}]
    assert silent.results == [(None, {"loss": 0.5, "acc": 0.9, "other": 1})]


def test_fetch_of_a_missing_name_says_what_the_step_returned() -> None:
    with quiet_session(hooks=[FetchingHook("loss")]) as sess, pytest.raises(KeyError, match="acc"):
        sess.run(lambda: {"acc": 1.0})


class FeedingHook(SessionRunHook):
    def __init__(self, feeds: dict[str, Any]) -> None:
        self.feeds = feeds

    def before_run(self, run_context: Any) -> SessionRunArgs:
        return SessionRunArgs(feed_dict=self.feeds)


def test_feed_dict_entries_become_keyword_arguments_of_the_step() -> None:
    with quiet_session(hooks=[FeedingHook({"lr": 0.1})]) as sess:
        assert sess.run(lambda x, lr: x * lr, 10) == pytest.approx(1.0)


def test_two_hooks_feeding_the_same_argument_is_an_error() -> None:
    hooks = [FeedingHook({"lr": 0.1}), FeedingHook({"lr": 0.2})]
    with quiet_session(hooks=hooks) as sess, pytest.raises(RuntimeError, match="lr"):
        sess.run(lambda lr: lr)


def test_run_step_fn_runs_hooked_steps_and_can_request_stop(
    trace: list[str], counter: Counter
) -> None:
    def step_fn(step_context: Any) -> int:
        step_context.run_with_hooks(counter.step)
        if step_context.session.global_step >= 3:
            step_context.request_stop()
        return step_context.session.global_step

    returned = []
    with quiet_session(hooks=[RecordingHook("h", trace)]) as sess:
        while not sess.should_stop():
            returned.append(sess.run_step_fn(step_fn))

    assert returned == [1, 2, None]
    assert events_of(trace, "h")[-1] == "h.end(3)"


def test_hook_list_must_be_a_list(counter: Counter) -> None:
    with pytest.raises(TypeError, match="wrap it in a list"):
        quiet_session(hooks=StopAtStepHook(last_step=1))


def test_singular_monitored_session_restores_from_checkpoint_dir(
    tmp_path: Path, counter: Counter
) -> None:
    with quiet_session(checkpoint_dir=tmp_path, state=counter.state, save_checkpoint_steps=1) as s:
        s.run(counter.step)
        s.run(counter.step)

    fresh = Counter()
    with SingularMonitoredSession(checkpoint_dir=tmp_path, state=fresh.state) as sess:
        assert sess.global_step == 2
    assert fresh.value == 2


def test_session_creator_is_refused_with_a_pointer() -> None:
    with pytest.raises(TypeError, match=r"state=.*checkpoint_dir="):
        MonitoredSession(session_creator=object())  # type: ignore[arg-type]


def test_fast_run_values_equal_the_ordinary_constructor() -> None:
    from trainhooks import SessionRunValues
    from trainhooks._session._dispatch import plain_run_values

    result = {"loss": 1.0}
    fast = plain_run_values(result)

    assert type(fast) is SessionRunValues
    assert fast == SessionRunValues(None, step_result=result)
    assert fast.step_result is result


def test_exception_from_a_listener_end_propagates_and_releases_the_directory(
    tmp_path: Path, counter: Counter
) -> None:
    from trainhooks import CheckpointSaverListener, Saver

    class BrokenEnd(CheckpointSaverListener):
        def end(self, session: Any, global_step_value: int) -> None:
            raise RuntimeError("report upload failed")

    hook = CheckpointSaverHook(tmp_path, save_steps=10, listeners=[BrokenEnd()])
    with pytest.raises(RuntimeError, match="report upload failed") as raised:  # noqa: SIM117
        with quiet_session(state=counter.state, chief_only_hooks=[hook]) as sess:
            sess.run(counter.step)

    assert any("BrokenEnd.end() at step 1" in n for n in raised.value.__notes__)
    assert [i.step for i in list_checkpoints(tmp_path)] == [0, 1]  # final save happened first
    with Saver() as other:
        other.save(counter.state, tmp_path, 2)


def test_recovery_without_a_checkpoint_keeps_state_and_step(
    trace: list[str], counter: Counter
) -> None:
    failures = [TimeoutError("slow"), None]

    def step() -> dict[str, float]:
        if counter.runs == 2 and failures and failures.pop(0):
            raise TimeoutError("slow")
        return counter.step()

    with quiet_session(
        state=counter.state, hooks=[RecordingHook("h", trace)], recoverable_errors=TimeoutError
    ) as sess:
        for _ in range(4):
            sess.run(step)

    assert [e for e in trace if "create" in e] == [
        "h.after_create_session(0)",
        "h.after_create_session(2)",
    ]
    assert (sess.global_step, counter.value) == (4, 4)


def test_restore_into_mismatched_state_fails_session_creation_clearly(
    tmp_path: Path, counter: Counter
) -> None:
    import numpy as np

    from trainhooks import StateMismatchError

    with quiet_session(checkpoint_dir=tmp_path, state=counter.state) as sess:
        sess.run(counter.step)

    wrong = {"w": np.zeros(7, dtype=np.float32)}
    with pytest.raises(StateMismatchError):
        quiet_session(checkpoint_dir=tmp_path, state=wrong)
