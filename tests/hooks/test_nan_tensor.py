"""NanTensorHook: a NaN/inf loss fails the run (keeping good checkpoints) or stops it."""

from __future__ import annotations

import logging

import pytest
import torch

import trainhooks as th


def diverging_step(bad_at: int, bad_value: float):
    calls = [0]

    def step() -> dict:
        calls[0] += 1
        value = bad_value if calls[0] >= bad_at else 1.0 / calls[0]
        return {"loss": torch.tensor(value)}

    return step


def test_nan_loss_raises_and_committed_checkpoints_survive(tmp_path):
    weights = {"w": torch.zeros(3)}
    step = diverging_step(bad_at=5, bad_value=float("nan"))
    with (
        pytest.raises(th.NanLossDuringTrainingError, match="loss = nan"),
        th.MonitoredTrainingSession(
            checkpoint_dir=tmp_path,
            state=weights,
            hooks=[th.NanTensorHook("loss")],
            save_checkpoint_steps=2,
            save_summaries_steps=None,
        ) as session,
    ):
        while not session.should_stop():
            session.run(step)
    # saves at 0, 2, 4; the failing step 5 exits by an exception: no final save
    assert [info.step for info in th.list_checkpoints(tmp_path)] == [0, 2, 4]


def test_infinite_loss_counts_as_divergence():
    hook = th.NanTensorHook("loss")
    with pytest.raises(th.NanLossDuringTrainingError), th.MonitoredSession(hooks=[hook]) as s:
        step = diverging_step(bad_at=2, bad_value=float("inf"))
        while not s.should_stop():
            s.run(step)


def test_without_failing_it_logs_and_requests_a_stop(caplog):
    caplog.set_level(logging.ERROR)
    hook = th.NanTensorHook("loss", fail_on_nan_loss=False)
    step = diverging_step(bad_at=3, bad_value=float("nan"))
    with th.MonitoredSession(hooks=[hook]) as session:
        while not session.should_stop():
            session.run(step)
        assert session.global_step == 3
    assert any("Model diverged" in r.getMessage() for r in caplog.records)


def test_finite_losses_of_any_scalar_type_pass():
    hook = th.NanTensorHook("loss")
    values = [1.0, torch.tensor([0.5]), torch.tensor(2.0, dtype=torch.float16), 3]
    with th.MonitoredSession(hooks=[hook]) as session:
        for value in values:
            session.run(lambda value=value: {"loss": value})
        assert not session.should_stop()


def test_a_missing_loss_says_what_the_step_returned():
    hooks = [th.NanTensorHook("loss")]
    with pytest.raises(KeyError, match=r"'loss'.*return it"), th.MonitoredSession(hooks=hooks) as s:
        s.run(lambda: {"lose": 1.0})
    with pytest.raises(KeyError, match="not a mapping"), th.MonitoredSession(hooks=hooks) as s:
        s.run(lambda: 1.0)
