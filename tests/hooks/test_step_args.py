"""StepArgsHook (TF's FeedFnHook): its mapping becomes keyword arguments of each step."""

from __future__ import annotations

import pytest
import torch

import trainhooks as th


def test_args_fn_feeds_each_step():
    batches = iter([torch.full((2,), float(i)) for i in range(3)])
    hook = th.StepArgsHook(lambda: {"batch": next(batches)})
    sums = []
    with th.MonitoredSession(hooks=[hook]) as session:
        for _ in range(3):
            sums.append(session.run(lambda batch, scale: float(batch.sum()) * scale, scale=10))
    assert sums == [0.0, 20.0, 40.0]


def test_feeding_an_argument_the_caller_passes_is_an_error():
    hook = th.StepArgsHook(lambda: {"batch": 1})
    with pytest.raises(RuntimeError, match="batch"), th.MonitoredSession(hooks=[hook]) as s:
        s.run(lambda batch: batch, batch=2)


def test_args_fn_must_return_a_mapping():
    hook = th.StepArgsHook(lambda: [1, 2])
    with pytest.raises(TypeError, match="mapping"), th.MonitoredSession(hooks=[hook]) as s:
        s.run(lambda: None)
