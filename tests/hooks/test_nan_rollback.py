"""NanTensorHook's rollback mode: a poisoned batch is undone and skipped, exactly.

The data is step-derived (docs/porting.md): the batch of data position ``p`` is a pure
function of ``p``, and the loop passes the batch of position ``global_step``. One position
is poisoned (NaN inputs, or targets 10⁴ times too large for the spike detector). The run
must roll back to the newest good checkpoint, skip that position, and end bit for bit
where a run whose data never had that batch ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import trainhooks as th
from _support.session import RecordingListener, events_of, save_pair
from _support.trees import assert_same_tree

POISON = 9  # the data position of global step 10
LAST_STEP = 16
SAVE_STEPS = 4


def batch(position: int, poison: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + position)
    x = torch.randn(8, 4, generator=generator)
    noise = 0.1 * torch.randn(8, 1, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + noise
    if position == POISON and poison == "nan":
        x = x.clone()
        x[0, 0] = float("nan")
    elif position == POISON and poison == "spike":
        y = y * 1e4
    return x, y


def build_state() -> dict[str, Any]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    return {"model": model, "optimizer": torch.optim.Adam(model.parameters(), lr=0.05)}


def train_step(state: dict[str, Any], x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    loss = torch.nn.functional.mse_loss(state["model"](x), y)
    state["optimizer"].zero_grad()
    loss.backward()
    state["optimizer"].step()
    return {"loss": loss.item()}


def clean_reference() -> dict[str, Any]:
    """A plain loop over data that never had the poisoned batch."""
    state = build_state()
    for position in [p for p in range(LAST_STEP) if p != POISON]:
        train_step(state, *batch(position))
    return state


def plain(state: dict[str, Any]) -> dict[str, Any]:
    return {"model": state["model"].state_dict(), "optimizer": state["optimizer"].state_dict()}


def read_scalars(logdir: Path, tag: str) -> list[tuple[int, float]]:
    accumulator = EventAccumulator(str(logdir))
    accumulator.Reload()
    return [(e.step, e.value) for e in accumulator.Scalars(tag)]


@pytest.mark.parametrize("poison", ["nan", "spike"])
def test_a_poisoned_batch_is_rolled_back_skipped_and_the_weights_match_clean_data(
    tmp_path: Path, poison: str
) -> None:
    state = build_state()
    trace: list[str] = []
    saver = th.CheckpointSaverHook(
        tmp_path, save_steps=SAVE_STEPS, listeners=[RecordingListener("a", trace)]
    )
    spikes = {"spike_factor": 100.0, "spike_window": 4} if poison == "spike" else {}
    nan_hook = th.NanTensorHook("loss", rollback=True, **spikes)
    with th.MonitoredTrainingSession(
        checkpoint_dir=tmp_path,
        state=state,
        chief_only_hooks=[saver],
        hooks=[th.StopAtStepHook(last_step=LAST_STEP), nan_hook],  # placed first by the factory
        save_summaries_steps=1,
        log_step_count_steps=None,
    ) as sess:
        while not sess.should_stop():
            sess.run(train_step, state, *batch(sess.global_step, poison))
        assert sess.skipped_steps == {POISON + 1}
        assert sess.global_step == LAST_STEP

    assert_same_tree(plain(state), plain(clean_reference()))
    # Listeners saw the rollback as a restore of step 8: one more save call there, no write.
    assert events_of(trace, "a") == [
        "a.begin",
        *save_pair("a", 0, 4, 8),
        *save_pair("a", 8),
        *save_pair("a", 12, 16),
        "a.end(16)",
    ]
    saved = th.list_checkpoints(tmp_path)
    assert [info.step for info in saved] == [0, 4, 8, 12, 16]  # nothing at the bad step
    # TensorBoard: the points written after step 8 were superseded by the replay (as after
    # a crash); the bad step's values were never written.
    losses = read_scalars(tmp_path, "loss")
    assert [step for step, _ in losses] == [s for s in range(1, LAST_STEP + 1) if s != 10]
    assert all(abs(value) < 1e3 for _, value in losses)


def test_it_gives_up_after_max_rollbacks_within_the_window_naming_the_steps(tmp_path):
    state = build_state()

    def poisoned_from_five(position: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch(position)
        return (x * float("nan"), y) if position >= 5 else (x, y)

    hook = th.NanTensorHook("loss", rollback=True, max_rollbacks=2, rollback_window=10)
    with (
        pytest.raises(th.NanLossDuringTrainingError, match=r"gave up.*\[6, 7, 8\]") as caught,
        th.MonitoredTrainingSession(
            checkpoint_dir=tmp_path,
            state=state,
            hooks=[hook],
            save_checkpoint_steps=SAVE_STEPS,
            save_summaries_steps=None,
            log_step_count_steps=None,
        ) as sess,
    ):
        while not sess.should_stop():
            sess.run(train_step, state, *poisoned_from_five(sess.global_step))
    assert caught.value.steps == (6, 7, 8)
    assert sess.skipped_steps == {6, 7}


def test_bad_steps_far_apart_do_not_exhaust_the_budget(tmp_path):
    state = build_state()
    bad_positions = {3, 9, 15}

    def data(position: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch(position)
        return (x * float("nan"), y) if position in bad_positions else (x, y)

    hook = th.NanTensorHook("loss", rollback=True, max_rollbacks=1, rollback_window=5)
    with th.MonitoredTrainingSession(
        checkpoint_dir=tmp_path,
        state=state,
        hooks=[hook, th.StopAtStepHook(last_step=18)],
        save_checkpoint_steps=2,
        save_summaries_steps=None,
        log_step_count_steps=None,
    ) as sess:
        while not sess.should_stop():
            sess.run(train_step, state, *data(sess.global_step))
    assert sess.skipped_steps == {4, 10, 16}


def test_without_a_checkpoint_to_go_back_to_it_fails_with_a_clear_error():
    state = build_state()
    hook = th.NanTensorHook("loss", rollback=True)
    with (
        pytest.raises(th.NanLossDuringTrainingError, match=r"cannot roll back.*no checkpoint_dir"),
        th.MonitoredSession(hooks=[hook], state=state) as sess,
    ):
        while not sess.should_stop():
            sess.run(train_step, state, *batch(sess.global_step, "nan"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spike_factor": 1.0}, "spike_factor must be above 1"),
        ({"max_rollbacks": -1}, "max_rollbacks must be an int >= 0"),
        ({"rollback_window": 0}, "rollback_window must be an int >= 1"),
        ({"spike_window": 0}, "spike_window must be an int >= 1"),
    ],
)
def test_arguments_are_checked(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        th.NanTensorHook("loss", rollback=True, **kwargs)


def test_a_spike_fails_the_run_outside_rollback_mode():
    losses = iter([1.0, 1.1, 0.9, 1.0, 50.0])
    hook = th.NanTensorHook("loss", spike_factor=10.0, spike_window=4)
    with (
        pytest.raises(th.NanLossDuringTrainingError, match="more than 10 times the median"),
        th.MonitoredSession(hooks=[hook]) as sess,
    ):
        while not sess.should_stop():
            sess.run(lambda: {"loss": next(losses)})


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")  # torchdata 0.11
def test_a_poisoned_example_behind_a_stateful_loader_is_skipped_exactly(tmp_path: Path) -> None:
    """The loader is in ``state``: the rollback restores its position too, and the loop
    starts a new iterator when ``restored_checkpoint`` says a restore just happened."""
    from torchdata.stateful_dataloader import StatefulDataLoader
    from torchdata.stateful_dataloader.sampler import RandomSampler

    generator = torch.Generator().manual_seed(7)
    inputs = torch.randn(96, 4, generator=generator)
    targets = inputs.sum(dim=1, keepdim=True)
    inputs[41, 2] = float("nan")  # one bad example: its batch comes once an epoch
    dataset = torch.utils.data.TensorDataset(inputs, targets)

    def build_loader() -> StatefulDataLoader:
        return StatefulDataLoader(
            dataset,
            batch_size=8,
            sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(1)),
            generator=torch.Generator().manual_seed(2),
        )

    last_step = 30  # 12 batches an epoch: the bad batch comes in three epochs
    state = {**build_state(), "loader": build_loader()}
    with th.MonitoredTrainingSession(
        checkpoint_dir=tmp_path,
        state=state,
        hooks=[th.NanTensorHook("loss", rollback=True), th.StopAtStepHook(last_step=last_step)],
        save_checkpoint_steps=SAVE_STEPS,
        save_summaries_steps=None,
        log_step_count_steps=None,
    ) as sess:
        while not sess.should_stop():
            for x, y in state["loader"]:  # a new iterator starts where the loader's state is
                sess.run(train_step, state, x, y)
                if sess.should_stop() or sess.restored_checkpoint is not None:
                    break  # stopped, or a rollback moved the loader back: iterate anew
        skipped = sess.skipped_steps

    reference, loader, consumed = build_state(), build_loader(), 0
    clean_steps = []
    while consumed < last_step:
        for x, y in loader:
            consumed += 1
            if not torch.isnan(x).any():
                train_step(reference, x, y)
                clean_steps.append(consumed)
            if consumed == last_step:
                break
    assert len(skipped) == 3
    assert sorted(skipped) == [s for s in range(1, last_step + 1) if s not in clean_steps]
    assert_same_tree(plain(state), plain(reference))
