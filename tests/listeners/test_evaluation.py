"""EvaluationListener: its schedule, the "don't act twice" rule in end(), JSONL + TensorBoard."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import trainhooks as th
from _support.listeners import train_counter


def weight_metrics(calls: list[int]):
    def eval_fn(session: th.MonitoredSession) -> dict:
        calls.append(session.global_step)
        return {"w": session.state["w"].clone(), "double": 2 * float(session.state["w"])}

    return eval_fn


def test_every_save_is_evaluated_once_and_end_does_not_repeat_the_last(tmp_path):
    calls: list[int] = []
    listener = th.EvaluationListener(weight_metrics(calls))
    train_counter(tmp_path, [listener], last_step=7, save_steps=3)
    # saves at 0, 3, 6 and the final one at 7; end(7) sees 7 already evaluated
    assert calls == [0, 3, 6, 7]
    assert listener.history == {s: {"w": float(s), "double": 2.0 * s} for s in (0, 3, 6, 7)}
    assert listener.last_step == 7
    assert listener.last_metrics == {"w": 7.0, "double": 14.0}


def test_with_background_saves_the_metrics_are_those_of_the_saved_step(tmp_path):
    """after_save comes steps after the snapshot, when the weight has moved on; the metrics
    recorded for each checkpoint are still those of its own step, and the best exporter
    ranks each checkpoint by its own metric."""
    calls: list[int] = []
    listener = th.EvaluationListener(weight_metrics(calls))
    exporter = th.BestCheckpointExporter(
        "double",
        mode="max",
        keep=1,
        source=listener,
        export_dir=tmp_path / "best",
        checkpoint_dir=tmp_path / "ckpt",
    )
    train_counter(tmp_path / "ckpt", [listener, exporter], 9, save_steps=3, async_save=True)
    assert calls == [0, 3, 6, 9]
    assert listener.history == {s: {"w": float(s), "double": 2.0 * s} for s in (0, 3, 6, 9)}
    (best,) = exporter.best
    assert (best.step, best.value) == (9, 18.0)
    assert float(th.load(tmp_path / "ckpt" / "ckpt-000000000009")["w"]) == 9.0


def test_end_evaluates_the_last_checkpoint_when_the_schedule_skipped_it(tmp_path):
    calls: list[int] = []
    listener = th.EvaluationListener(weight_metrics(calls), every_n_saves=3)
    train_counter(tmp_path, [listener], last_step=10, save_steps=2)
    # saves 0, 2, 4, 6, 8, 10: the 3rd and 6th are evaluated by after_save
    assert calls == [4, 10]
    calls.clear()
    train_counter(tmp_path / "b", [listener], last_step=8, save_steps=2)
    # saves 0..8 (5 saves): after_save evaluates the 3rd (4); end adds the last step, 8
    assert calls == [4, 8]


def test_metrics_go_to_jsonl_and_tensorboard(tmp_path):
    out = tmp_path / "out"
    listener = th.EvaluationListener(weight_metrics([]), output_dir=out, name="val")
    train_counter(tmp_path / "ckpt", [listener], last_step=4, save_steps=2)
    records = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    assert [(r["step"], r["metrics"]["double"]) for r in records] == [(0, 0), (2, 4), (4, 8)]
    accumulator = EventAccumulator(str(out / "val"))
    accumulator.Reload()
    assert [(e.step, e.value) for e in accumulator.Scalars("w")] == [(0, 0), (2, 2), (4, 4)]


def test_tensorboard_can_be_turned_off(tmp_path):
    listener = th.EvaluationListener(weight_metrics([]), output_dir=tmp_path, tensorboard=False)
    train_counter(tmp_path / "ckpt", [listener], last_step=2, save_steps=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "eval.jsonl"]


def test_nothing_is_evaluated_at_end_after_an_exception(tmp_path):
    calls: list[int] = []
    listener = th.EvaluationListener(weight_metrics(calls), every_n_saves=100)
    saver_hook = th.CheckpointSaverHook(tmp_path, save_steps=1, listeners=[listener])
    with (
        pytest.raises(ValueError, match="bad batch"),
        th.MonitoredTrainingSession(
            state={"w": torch.zeros(())}, chief_only_hooks=[saver_hook]
        ) as session,
    ):
        session.run(lambda: None)
        raise ValueError("bad batch")
    assert calls == []


def test_a_non_numeric_metric_names_listener_metric_and_step(tmp_path):
    listener = th.EvaluationListener(lambda s: {"ok": 1.0, "bad": torch.zeros(3)}, name="val")
    with pytest.raises(TypeError, match=r"'val'.*'bad' at step 0") as info:
        train_counter(tmp_path, [listener], last_step=2, save_steps=1)
    assert any("EvaluationListener.after_save() at step 0" in n for n in info.value.__notes__)


@pytest.mark.parametrize("kwargs", [{"every_n_saves": 0}, {"name": "a/b"}, {"tensorboard": True}])
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        th.EvaluationListener(lambda s: {}, **kwargs)


class Crash(Exception):
    """Stands for the process dying mid-run: the session exits without ``end``."""


def train_resumable(directory, listener, *, last_step: int, crash_at: int | None = None) -> None:
    """Train a torch scalar (+1 per step) saving every 2 steps, resuming from ``directory``."""
    weight = torch.zeros(())
    saver_hook = th.CheckpointSaverHook(directory, save_steps=2, listeners=[listener])
    with (
        pytest.raises(Crash) if crash_at is not None else contextlib.nullcontext(),
        th.MonitoredTrainingSession(
            checkpoint_dir=directory,
            state={"w": weight},
            chief_only_hooks=[saver_hook],
            hooks=[th.StopAtStepHook(last_step=last_step)],
            save_summaries_steps=None,
            log_step_count_steps=None,
        ) as session,
    ):
        while not session.should_stop():
            session.run(lambda: weight.add_(1.0))
            if session.global_step == crash_at:
                raise Crash


def test_a_resumed_run_keeps_the_schedule_and_records_each_evaluation_once(tmp_path):
    out = tmp_path / "out"
    uninterrupted = th.EvaluationListener(weight_metrics([]), every_n_saves=2, output_dir=out)
    train_resumable(tmp_path / "a", uninterrupted, last_step=12)
    reference = (out / "eval.jsonl").read_text().splitlines()
    (out / "eval.jsonl").unlink()

    first = th.EvaluationListener(weight_metrics([]), every_n_saves=2, output_dir=out)
    train_resumable(tmp_path / "b", first, last_step=12, crash_at=7)  # evaluated 2 and 6
    calls: list[int] = []
    resumed = th.EvaluationListener(weight_metrics(calls), every_n_saves=2, output_dir=out)
    train_resumable(tmp_path / "b", resumed, last_step=12)

    assert calls == [6, 10, 12]  # the restored step again, then the schedule of 2nd saves
    assert resumed.history == uninterrupted.history
    records = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [json.loads(line)["step"] for line in reference]
    assert [r["step"] for r in records] == [2, 6, 10, 12]  # step 6 recorded once
    accumulator = EventAccumulator(str(out / "eval"))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("w")] == [2, 6, 10, 12]


def test_an_append_after_a_torn_line_starts_a_new_line(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "eval.jsonl").write_text('{"step": 0, "metrics": {"w": 0.0}}\n{"step": 2, "met')
    listener = th.EvaluationListener(weight_metrics([]), output_dir=out, tensorboard=False)
    train_counter(tmp_path / "ckpt", [listener], last_step=2, save_steps=2)
    lines = (out / "eval.jsonl").read_text().splitlines()
    assert lines[1] == '{"step": 2, "met'
    assert [json.loads(line)["step"] for line in lines[2:]] == [0, 2]
