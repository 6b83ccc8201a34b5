"""A torch DataLoader in ``state`` resumes mid-epoch exactly, even after a SIGKILL.

A child process (``_data_position_child.py``) trains through ``MonitoredTrainingSession``
on a shuffled ``StatefulDataLoader`` built as docs/porting.md says, saving every 4 steps.
It is SIGKILLed (with its loader workers) in the middle of an epoch, two steps after its
last save, then relaunched on the same directory: from the restored step on it must train
on exactly the batches of an uninterrupted run, across the next epoch boundary too, and
end with bit-identical weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import RandomSampler

import trainhooks
from _support.trees import assert_same_tree

# torchdata 0.11 calls torch.set_vital, which torch 2.13 deprecates; harmless (docs/porting.md)
pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")

CHILD = Path(__file__).resolve().parent / "_data_position_child.py"
SAVE_STEPS = 4
KILL_AT = 10  # 7 batches an epoch: step 10 is the third of epoch 2, two steps after a save
LAST_STEP = 20  # the resumed run crosses into epoch 3


@dataclass
class Run:
    """What the child said during one of its runs."""

    start: int | None = None
    batches: dict[int, str] = field(default_factory=dict)


@dataclass
class Child:
    """How one child process ended, and what each of its runs said."""

    returncode: int
    stderr: str
    runs: list[Run]


def run_child(tmp_path: Path, num_workers: int, *runs: tuple[Path, int | None]) -> Child:
    """Run the child's ``(directory, pause_at)`` runs in order; SIGKILL it where it pauses."""
    config = {
        "num_workers": num_workers,
        "last_step": LAST_STEP,
        "save_steps": SAVE_STEPS,
        "runs": [{"directory": str(d), "pause_at": pause_at} for d, pause_at in runs],
    }
    stderr_path = tmp_path / f"child-{len(list(tmp_path.glob('child-*')))}.stderr"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,  # its own process group: the kill takes the workers too
        )
        said: list[Run] = []
        assert proc.stdout is not None and proc.stdin is not None
        for raw in proc.stdout:
            event, _, value = raw.decode().rstrip("\n").partition(" ")
            if event == "run":
                said.append(Run())
            elif event == "start":
                said[-1].start = int(value)
            elif event == "batch":
                step, _, indices = value.partition(" ")
                said[-1].batches[int(step)] = indices
            elif event == "paused":
                os.killpg(proc.pid, signal.SIGKILL)  # a preemption: trainer and workers die
                break
        returncode = proc.wait()
        proc.stdout.close()
        proc.stdin.close()
    return Child(returncode, stderr_path.read_text(errors="replace"), said)


def final_state(directory: Path) -> dict[str, Any]:
    latest = trainhooks.latest_checkpoint(directory)
    assert latest is not None and latest.step == LAST_STEP
    return trainhooks.load(latest.path)


@pytest.mark.parametrize("num_workers", [0, 2], ids=["in-process", "two-workers"])
def test_loader_in_state_resumes_mid_epoch_with_the_uninterrupted_batches_and_weights(
    tmp_path: Path, num_workers: int
) -> None:
    reference_dir, directory = tmp_path / "reference", tmp_path / "interrupted"
    first = run_child(tmp_path, num_workers, (reference_dir, None), (directory, KILL_AT))
    assert first.returncode == -signal.SIGKILL, first.stderr
    reference, killed = first.runs
    assert sorted(reference.batches) == list(range(1, LAST_STEP + 1))
    assert killed.batches == {s: reference.batches[s] for s in range(1, KILL_AT + 1)}

    second = run_child(tmp_path, num_workers, (directory, None))
    assert second.returncode == 0, second.stderr
    (resumed,) = second.runs
    restored = KILL_AT - KILL_AT % SAVE_STEPS
    assert resumed.start == restored
    expected = {s: reference.batches[s] for s in range(restored + 1, LAST_STEP + 1)}
    assert resumed.batches == expected

    want, got = final_state(reference_dir), final_state(directory)
    for name in ("model", "optimizer", "rng"):
        assert_same_tree(got[name], want[name], name)


@pytest.mark.parametrize("num_workers", [0, 2], ids=["in-process", "two-workers"])
def test_loader_state_round_trips_through_a_checkpoint_unchanged(
    tmp_path: Path, num_workers: int
) -> None:
    """Every value of the loader's state (ints, None, nested dicts, the generator's state
    tensor, the workers' snapshot) comes back as saved, with no pickle involved."""

    def build() -> Any:
        dataset = torch.arange(20)
        return StatefulDataLoader(
            dataset,
            batch_size=3,
            sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(1)),
            generator=torch.Generator().manual_seed(2),
            num_workers=num_workers,
        )

    loader = build()
    batches = iter(loader)
    for _ in range(4):
        next(batches)
    with trainhooks.Saver() as saver:
        saver.save({"loader": loader}, tmp_path, step=4)
        fresh = build()
        saver.restore({"loader": fresh}, tmp_path)
    assert_same_tree(fresh.state_dict(), loader.state_dict(), "loader")
    assert next(iter(fresh)).tolist() == next(batches).tolist()
