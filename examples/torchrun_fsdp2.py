"""FSDP2 + Adam on CPU/gloo, saved and resumed through trainhooks' DCP storage.

    torchrun --standalone --nproc-per-node 2 examples/torchrun_fsdp2.py /tmp/run
    torchrun --standalone --nproc-per-node 4 examples/torchrun_fsdp2.py /tmp/run  # reshards
    torchrun --standalone --nproc-per-node 1 examples/torchrun_fsdp2.py /tmp/run  # and to one

Each launch resumes from the newest checkpoint (whatever world size wrote it), trains a few
steps and saves once; `trainhooks verify /tmp/run` checks every shard afterwards. Across
machines, see "Launching" in docs/distributed.md (c10d rendezvous).
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import trainhooks
from trainhooks.distributed import load_sharded, save_sharded


def main(directory: str) -> None:
    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    step = 0

    def train_one() -> float:
        x = torch.randn(16, 32, generator=torch.Generator().manual_seed(step * world + rank))
        loss = model(x).pow(2).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        return loss.item()

    train_one()  # creates Adam's state, so the load has targets for it
    latest = trainhooks.latest_checkpoint(directory)
    if latest is not None:
        model_sd, optim_sd = get_state_dict(model, optim)
        state = {"model": model_sd, "optim": optim_sd}
        load_sharded(state, latest.path)
        set_state_dict(model, optim, model_state_dict=model_sd, optim_state_dict=optim_sd)
        step = latest.step
    for _ in range(5):
        loss = train_one()
        step += 1
    model_sd, optim_sd = get_state_dict(model, optim)
    info = save_sharded({"model": model_sd, "optim": optim_sd}, directory, step)
    if rank == 0:
        print(f"world {world}: step {step}, loss {loss:.4f}, saved {info.path}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/trainhooks-fsdp2")
