"""Child process of the data-position tests: a torch training job whose DataLoader is state.

Run as ``python _data_position_child.py '<json config>'``. It trains a small model with
dropout on a shuffled ``StatefulDataLoader`` built as docs/porting.md says, through
``MonitoredTrainingSession`` and a ``CheckpointSaverHook``; the loader, the model, the
optimizer and the global generators are all in ``state``, nothing else is saved.

The config lists one or more runs, done one after the other in this process, each from
freshly built and seeded objects (so an uninterrupted reference run costs no second torch
import). The child reports on stdout, one line per event, with single unbuffered writes
(nothing waits in a buffer when SIGKILL arrives): ``run <i>`` as run ``i`` begins,
``start <step>`` once state is restored or initialised,
``batch <step> <indices>`` for the examples each step trained on, ``paused <step>`` when it
stops to be killed, ``done <step>`` at a normal end. With ``pause_at`` set it blocks on
stdin after that step, so the parent can SIGKILL it at a known point, mid-epoch and between
two saves.

Config keys: ``num_workers``, ``last_step``, ``save_steps`` and ``runs``, a list of
``{"directory": ..., "pause_at": <step or null>}``.
"""

from __future__ import annotations

import json
import os
import random
import sys
from typing import Any

EXAMPLES = 40
BATCH_SIZE = 6  # 7 batches an epoch, the last one short
SEED = 0


def announce(event: str, value: object) -> None:
    os.write(1, f"{event} {value}\n".encode())


def build_state(torch: Any, num_workers: int) -> dict[str, Any]:
    """Model, optimizer, global generators and a shuffled loader, all seeded."""
    import numpy as np
    from torchdata.stateful_dataloader import StatefulDataLoader
    from torchdata.stateful_dataloader.sampler import RandomSampler

    import trainhooks

    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    data = torch.randn(EXAMPLES, 4, generator=torch.Generator().manual_seed(SEED))
    targets = data.sum(dim=1, keepdim=True)
    dataset = torch.utils.data.StackDataset(torch.arange(EXAMPLES), data, targets)
    loader = StatefulDataLoader(  # built as docs/porting.md says: two generators
        dataset,
        batch_size=BATCH_SIZE,
        sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(SEED)),
        generator=torch.Generator().manual_seed(SEED + 1),
        num_workers=num_workers,
    )
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.25), torch.nn.Linear(16, 1)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return {
        "model": model,
        "optimizer": optimizer,
        "rng": trainhooks.RNGState(),  # dropout draws from torch's global generator
        "loader": loader,
    }


def train(config: dict[str, Any], directory: str, pause_at: int | None) -> None:
    import torch

    import trainhooks

    torch.set_num_threads(1)
    state = build_state(torch, config["num_workers"])
    model, optimizer = state["model"], state["optimizer"]

    def train_step(index: Any, inputs: Any, targets: Any, step: int) -> dict[str, float]:
        announce("batch", f"{step} {','.join(str(i) for i in index.tolist())}")
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return {"loss": loss.item()}

    with trainhooks.MonitoredTrainingSession(
        checkpoint_dir=directory,
        state=state,
        chief_only_hooks=[
            trainhooks.CheckpointSaverHook(directory, save_steps=config["save_steps"])
        ],
        hooks=[trainhooks.StopAtStepHook(last_step=config["last_step"])],
        save_checkpoint_secs=None,
        save_summaries_steps=None,
        log_step_count_steps=None,
    ) as session:
        announce("start", session.global_step)
        while not session.should_stop():
            for index, inputs, targets in state["loader"]:
                session.run(train_step, index, inputs, targets, session.global_step + 1)
                if session.global_step == pause_at:
                    announce("paused", session.global_step)
                    sys.stdin.readline()  # blocks until the parent's SIGKILL
                if session.should_stop():
                    break
        last = session.global_step
    announce("done", last)


def main(config: dict[str, Any]) -> None:
    for i, run in enumerate(config["runs"]):
        announce("run", i)
        train(config, run["directory"], run["pause_at"])


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
