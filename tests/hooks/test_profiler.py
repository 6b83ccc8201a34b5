"""ProfilerHook: Chrome traces of the scheduled steps, from torch.profiler or pure Python."""

from __future__ import annotations

import json

import pytest
import torch

import trainhooks as th


def a_recognisable_step_function() -> dict:
    return {"loss": sum(i * i for i in range(50))}


def run(hook: th.ProfilerHook, n: int, step=a_recognisable_step_function) -> None:
    with th.MonitoredSession(hooks=[hook, th.StopAtStepHook(last_step=n)]) as session:
        while not session.should_stop():
            session.run(step)


def test_python_tracer_writes_a_timeline_per_scheduled_step(tmp_path):
    hook = th.ProfilerHook(save_steps=3, output_dir=tmp_path, backend="python")
    run(hook, 8)
    # as in TF the first run is never traced; then every 3 global steps
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["timeline-2.json", "timeline-5.json", "timeline-8.json"]
    trace = json.loads((tmp_path / "timeline-5.json").read_text())
    names = [event["name"] for event in trace["traceEvents"]]
    assert any(name.startswith("a_recognisable_step_function") for name in names)
    assert all(e["ph"] == "X" and e["dur"] >= 0 for e in trace["traceEvents"])


def test_torch_profiler_is_used_when_torch_is_imported(tmp_path):
    weights = torch.randn(8, 8)
    hook = th.ProfilerHook(save_steps=2, output_dir=tmp_path)
    run(hook, 2, step=lambda: {"y": float((weights @ weights).sum())})
    trace = json.loads((tmp_path / "timeline-2.json").read_text())
    assert any("matmul" in event.get("name", "") for event in trace["traceEvents"])


def test_exactly_one_schedule_is_required(tmp_path):
    with pytest.raises(ValueError):
        th.ProfilerHook(output_dir=tmp_path)
    with pytest.raises(ValueError):
        th.ProfilerHook(save_steps=1, save_secs=1, output_dir=tmp_path)


def test_a_step_failing_while_traced_leaves_no_tracer_behind(tmp_path):
    import sys

    hook = th.ProfilerHook(save_steps=1, output_dir=tmp_path, backend="python")
    calls = [0]

    def step() -> None:
        calls[0] += 1
        if calls[0] == 2:  # the first traced run
            raise RuntimeError("out of memory")

    before = sys.getprofile()
    with pytest.raises(RuntimeError), th.MonitoredSession(hooks=[hook]) as session:
        while True:
            session.run(step)
    assert sys.getprofile() is before
    assert list(tmp_path.iterdir()) == []
