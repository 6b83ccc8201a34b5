"""A DDP model trained by ``MonitoredTrainingSession`` on every rank, resumed on relaunch.

    torchrun --standalone --nproc-per-node 2 examples/torchrun_ddp.py /tmp/ddp-run
    torchrun --standalone --nproc-per-node 2 examples/torchrun_ddp.py /tmp/ddp-run  # resumes

Every rank runs this same code, as in TensorFlow: the ``CheckpointSaverHook`` (with a
listener) goes to ``chief_only_hooks``, so only rank 0 has it; it decides when to save,
and every rank joins one collective save (each writes its shard, rank 0 commits). A stop
asked for on any rank (here ``StopAtStepHook``) or a SIGTERM to any rank stops all of
them at the same step; the relaunch resumes from the newest checkpoint on every rank.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainhooks import (
    CheckpointSaverHook,
    CheckpointSaverListener,
    MonitoredTrainingSession,
    StopAtStepHook,
)


class PrintSaves(CheckpointSaverListener):
    """Runs on rank 0 only, around each collective save."""

    def after_save(self, session: object, global_step_value: int) -> None:
        print(f"rank 0: checkpoint of step {global_step_value} committed", flush=True)


def main(directory: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = DistributedDataParallel(nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1)))
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    saver = CheckpointSaverHook(directory, save_steps=10, listeners=[PrintSaves()])

    def train_step(step: int) -> dict[str, float]:
        generator = torch.Generator().manual_seed(step * 1000 + rank)  # data by step: exact resume
        loss = model(torch.randn(16, 32, generator=generator)).pow(2).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        return {"loss": loss.item()}

    with MonitoredTrainingSession(
        checkpoint_dir=directory,
        state={"model": model, "optim": optim},
        chief_only_hooks=[saver],
        hooks=[StopAtStepHook(num_steps=25)],
        save_summaries_steps=None,
        log_step_count_steps=None,
        sync_every_steps=5,
    ) as sess:
        first = sess.global_step
        result: dict[str, float] = {}
        while not sess.should_stop():
            result = sess.run(train_step, sess.global_step + 1)
    print(
        f"rank {rank}: steps {first} -> {sess.global_step}, loss {result.get('loss', 0):.5f}",
        flush=True,
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/trainhooks-ddp")
