"""A failing listener: its exception reaches the user naming it and the step; committed
checkpoints stay intact and verifiable."""

from __future__ import annotations

import pytest
import torch

import trainhooks as th


class FailingListener(th.CheckpointSaverListener):
    def __init__(self, method: str, at_step: int) -> None:
        self.method = method
        self.at_step = at_step

    def before_save(self, session, global_step_value):
        if self.method == "before_save" and global_step_value == self.at_step:
            raise RuntimeError("disk quota for eval results exceeded")

    def after_save(self, session, global_step_value):
        if self.method == "after_save" and global_step_value == self.at_step:
            raise RuntimeError("disk quota for eval results exceeded")


def train_with(tmp_path, listener) -> pytest.ExceptionInfo:
    weight = torch.zeros(4)
    saver_hook = th.CheckpointSaverHook(tmp_path, save_steps=2, listeners=[listener])
    with (
        pytest.raises(RuntimeError, match="quota") as info,
        th.MonitoredTrainingSession(
            state={"w": weight},
            chief_only_hooks=[saver_hook],
            hooks=[th.StopAtStepHook(last_step=10)],
        ) as session,
    ):
        while not session.should_stop():
            session.run(lambda: weight.add_(1.0))
    return info


def test_after_save_failure_keeps_the_just_committed_checkpoint(tmp_path):
    info = train_with(tmp_path, FailingListener("after_save", at_step=4))
    (note,) = info.value.__notes__
    assert "FailingListener.after_save()" in note and "step 4" in note
    steps = [c.step for c in th.list_checkpoints(tmp_path)]
    assert steps == [0, 2, 4]
    for checkpoint in th.list_checkpoints(tmp_path):
        th.verify_checkpoint(checkpoint.path)
    restored = {"w": torch.zeros(4)}
    with th.Saver() as saver:
        saver.restore(restored, tmp_path)
    assert torch.equal(restored["w"], torch.full((4,), 4.0))


def test_before_save_failure_writes_nothing_for_that_step(tmp_path):
    info = train_with(tmp_path, FailingListener("before_save", at_step=4))
    assert "FailingListener.before_save() at step 4" in info.value.__notes__[0]
    assert [c.step for c in th.list_checkpoints(tmp_path)] == [0, 2]
