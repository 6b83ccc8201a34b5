"""SummarySaverHook: TensorBoard scalars read back with TensorBoard's own event reader."""

from __future__ import annotations

import importlib.util
import logging

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import trainhooks as th


def read_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(logdir))
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def counting_step():
    i = [0]

    def step() -> dict:
        i[0] += 1
        return {
            "loss": torch.tensor(1.0 / i[0]),
            "lr": 0.5,
            "metrics": {"acc": i[0] / 10},
            "logits": torch.zeros(4),  # not a scalar: skipped
            "name": "text",  # not a number: skipped
        }

    return step


def run(hooks: list, n: int, step=None) -> None:
    step = step or counting_step()
    with th.MonitoredSession(hooks=[*hooks, th.StopAtStepHook(last_step=n)]) as session:
        while not session.should_stop():
            session.run(step)


def test_every_scalar_the_step_returns_is_written_at_tf_steps(tmp_path):
    run([th.SummarySaverHook(save_steps=2, output_dir=tmp_path)], 6)
    scalars = read_scalars(tmp_path)
    assert sorted(scalars) == ["loss", "lr", "metrics/acc"]
    # TF: the first run is summarised, then every save_steps global steps
    assert [step for step, _ in scalars["loss"]] == [1, 3, 5]
    assert [value for _, value in scalars["loss"]] == pytest.approx([1.0, 1 / 3, 0.2])
    assert [v for _, v in scalars["metrics/acc"]] == pytest.approx([0.1, 0.3, 0.5])


def test_named_scalars_with_tags(tmp_path):
    hook = th.SummarySaverHook(save_steps=1, output_dir=tmp_path, scalars={"train/loss": "loss"})
    run([hook], 3)
    scalars = read_scalars(tmp_path)
    assert list(scalars) == ["train/loss"]
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3]


def test_a_named_value_that_is_not_a_scalar_is_an_error(tmp_path):
    hook = th.SummarySaverHook(save_steps=1, output_dir=tmp_path, scalars=["logits"])
    with pytest.raises(TypeError, match="logits"):
        run([hook], 2)


def test_a_bare_scalar_result_is_tagged_result(tmp_path):
    run([th.SummarySaverHook(save_steps=1, output_dir=tmp_path)], 2, step=lambda: 0.25)
    assert read_scalars(tmp_path) == {"result": [(1, 0.25), (2, 0.25)]}


def test_any_writer_with_add_scalar_can_be_passed():
    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[str, float, int]] = []

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            self.calls.append((tag, value, step))

    recorder = Recorder()
    run([th.SummarySaverHook(save_steps=5, summary_writer=recorder, scalars=["lr"])], 6)
    assert recorder.calls == [("lr", 0.5, 1), ("lr", 0.5, 6)]


def test_monitored_training_session_installs_it_for_the_steps_scalars(tmp_path):
    state = {"w": torch.ones(2)}
    with th.MonitoredTrainingSession(
        checkpoint_dir=tmp_path,
        state=state,
        save_summaries_steps=3,
        save_checkpoint_secs=None,
        log_step_count_steps=None,
        hooks=[th.StopAtStepHook(last_step=7)],
    ) as session:
        step = counting_step()
        while not session.should_stop():
            session.run(step)
    assert [s for s, _ in read_scalars(tmp_path)["loss"]] == [1, 4, 7]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"output_dir": "x"},
        {"save_steps": 1, "save_secs": 1, "output_dir": "x"},
        {"save_steps": 1},
        {"save_steps": 1, "output_dir": "x", "summary_writer": object()},
    ],
)
def test_tf_argument_rules_are_enforced(kwargs):
    with pytest.raises(ValueError):
        th.SummarySaverHook(**kwargs)


def test_graph_summary_ops_are_refused_with_a_pointer_to_scalars(tmp_path):
    with pytest.raises(TypeError, match="scalars="):
        th.SummarySaverHook(save_steps=1, output_dir=tmp_path, summary_op=object())


def test_missing_tensorboard_names_the_extra_and_training_goes_on(tmp_path, monkeypatch, caplog):
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: object):
        return None if name == "tensorboard" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ImportError, match=r"trainhooks\[tensorboard\]"):
        th.SummarySaverHook(save_steps=1, output_dir=tmp_path)
    caplog.set_level(logging.WARNING)
    with th.MonitoredTrainingSession(
        checkpoint_dir=tmp_path, state={}, hooks=[th.StopAtStepHook(last_step=2)]
    ) as session:
        while not session.should_stop():
            session.run(lambda: {"loss": 1.0})
    assert any("SummarySaverHook is unavailable" in r.getMessage() for r in caplog.records)


def next_event_files_sort_in_creation_order(scratch) -> None:
    """Make the next two event files this process creates sort in creation order.

    TensorBoard reads a directory's event files in name order, and names them
    ``<second>.<host>.<pid>.<per-process counter>``: within one second, counter 10 sorts
    before counter 9. Throwaway files move the counter past such a step.
    """
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    while True:
        writer = EventFileWriter(str(scratch))
        writer.close()
        counter = max(int(p.name.rsplit(".", 1)[1]) for p in scratch.glob("*tfevents*"))
        if len(str(counter + 1)) == len(str(counter + 2)):
            return


def test_a_resumed_run_replaces_what_the_crashed_run_wrote_past_its_checkpoint(tmp_path):
    weight = torch.zeros(())
    next_event_files_sort_in_creation_order(tmp_path / "scratch")
    tmp_path = tmp_path / "run"

    def session() -> th.MonitoredSession:
        return th.MonitoredTrainingSession(
            checkpoint_dir=tmp_path,
            state={"w": weight},
            save_checkpoint_steps=5,
            save_summaries_steps=1,
            log_step_count_steps=None,
            hooks=[th.StopAtStepHook(last_step=10)],
        )

    def step() -> dict:
        weight.add_(1.0)
        return {"w": weight.clone()}

    with pytest.raises(KeyboardInterrupt), session() as first:
        while True:
            first.run(step)
            if first.global_step == 8:  # crashes after step 8; the last checkpoint is 5
                raise KeyboardInterrupt
    with session() as second:
        while not second.should_stop():
            second.run(step)
    steps_and_values = read_scalars(tmp_path)["w"]
    assert steps_and_values == [(s, float(s)) for s in range(1, 11)]
