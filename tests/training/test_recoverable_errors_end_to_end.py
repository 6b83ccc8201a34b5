"""``recoverable_errors`` end to end: a real training step raises a user-declared
"preempted" exception twice; the session restores the latest checkpoint and goes on, and
the run ends exactly where an uninterrupted run ends.

The step reads its batch from ``sess.global_step`` inside the step function (not from the
arguments of ``run``): TF's recovery retries the same ``run`` call after restoring an
older step, so only a batch derived inside the step matches the restored position.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import trainhooks as th
from _support.trees import assert_same_tree

LAST_STEP = 14


class NodePreempted(Exception):
    """What a user's framework raises when the accelerator it ran on went away."""


def build_state() -> dict[str, Any]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    return {"model": model, "optimizer": torch.optim.Adam(model.parameters(), lr=0.01)}


def update(state: dict[str, Any], position: int) -> float:
    generator = torch.Generator().manual_seed(position)
    x = torch.randn(16, 4, generator=generator)
    y = x.sum(dim=1, keepdim=True) + torch.randn(16, 1, generator=generator)
    loss = torch.nn.functional.mse_loss(state["model"](x), y)
    state["optimizer"].zero_grad()
    loss.backward()
    state["optimizer"].step()
    return loss.item()


def train(directory: Path, failures: dict[int, str]) -> tuple[dict[str, Any], list[int]]:
    """Train to LAST_STEP; ``failures`` maps a data position to where its first attempt
    raises: "before" the update, or "after" it (the state is then already changed)."""
    state = build_state()
    attempts: list[int] = []
    with th.MonitoredTrainingSession(
        checkpoint_dir=directory,
        state=state,
        hooks=[th.StopAtStepHook(last_step=LAST_STEP)],
        save_checkpoint_steps=3,
        save_summaries_steps=None,
        log_step_count_steps=None,
        recoverable_errors=(NodePreempted,),
    ) as sess:

        def step() -> dict[str, float]:
            position = sess.global_step
            attempts.append(position)
            where = failures.pop(position, None)
            if where == "before":
                raise NodePreempted(f"lost the device before step {position + 1}")
            loss = update(state, position)
            if where == "after":
                raise NodePreempted(f"lost the device after step {position + 1}'s update")
            return {"loss": loss}

        while not sess.should_stop():
            sess.run(step)
    return state, attempts


def plain(state: dict[str, Any]) -> dict[str, Any]:
    return {"model": state["model"].state_dict(), "optimizer": state["optimizer"].state_dict()}


def test_a_step_preempted_twice_resumes_from_the_checkpoints_and_ends_as_uninterrupted(
    tmp_path: Path,
) -> None:
    reference, reference_attempts = train(tmp_path / "reference", {})
    assert reference_attempts == list(range(LAST_STEP))

    state, attempts = train(tmp_path / "preempted", {7: "after", 10: "before"})
    # position 7 (step 8) failed after its update: back to the checkpoint at step 6, and
    # steps 7 and 8 run again; position 10 (step 11) failed first: back to step 9.
    assert attempts == [*range(8), 6, 7, 8, 9, 10, 9, 10, 11, 12, 13]
    assert_same_tree(plain(state), plain(reference))
    assert th.latest_checkpoint(tmp_path / "preempted").step == LAST_STEP
