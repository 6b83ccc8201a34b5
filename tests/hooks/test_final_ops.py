"""FinalOpsHook: one call of final_fn at a normal end, with the trained state."""

from __future__ import annotations

import pytest
import torch

import trainhooks as th


def test_final_fn_sees_the_final_state_once_at_the_end():
    weights = torch.zeros(2)
    calls = []

    def final_fn(session: th.MonitoredSession) -> float:
        calls.append(session.global_step)
        return float(session.state["w"].sum())

    hook = th.FinalOpsHook(final_fn)
    with th.MonitoredSession(
        hooks=[hook, th.StopAtStepHook(last_step=3)], state={"w": weights}
    ) as session:
        while not session.should_stop():
            session.run(lambda: weights.add_(1.0))
        assert hook.final_ops_values is None  # not before end()
    assert calls == [3]
    assert hook.final_ops_values == 6.0


def test_no_final_values_when_the_session_fails():
    hook = th.FinalOpsHook(lambda session: "done")
    with pytest.raises(RuntimeError, match="boom"), th.MonitoredSession(hooks=[hook]) as s:
        s.run(lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert hook.final_ops_values is None


def test_final_fn_must_be_callable():
    with pytest.raises(TypeError, match="function"):
        th.FinalOpsHook([1, 2])  # a TF user's list of tensors has no meaning here
