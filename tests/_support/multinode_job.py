"""A training job's save and load as run on each node of a multi-node ``torchrun`` launch
(``tests/dist/test_multinode.py`` starts two "nodes" on loopback, one process each).

Every process: an FSDP2 model with Adam sharded over all nodes' ranks, one collective save
into the shared directory given as the first argument, a load into a fresh model checked bit
for bit; rank 0 leaves the saved values in ``expected.npz`` for the test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from _support import dist_workers as w
from trainhooks.distributed import load_sharded, save_sharded


def main(directory: Path) -> None:
    dist.init_process_group("gloo")  # rank, world and address from torchrun's environment
    torch.set_num_threads(1)
    world = dist.get_world_size()
    model = w.fsdp_model(world)
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    w.train(model, optim, 2)
    expected = w.full(w.state(model, optim))
    info = save_sharded(w.state(model, optim), directory, 2, metadata={"nodes": 2}, timeout=120)
    fresh = w.fsdp_model(world, seed=7)
    fresh_optim = torch.optim.Adam(fresh.parameters(), lr=0.01)
    w.train(fresh, fresh_optim, 1)
    target = w.state(fresh, fresh_optim)
    load_sharded(target, info.path, timeout=120)
    w.assert_same(w.full(target), expected, f"rank {dist.get_rank()}")
    if dist.get_rank() == 0:
        np.savez(directory / "expected.npz", **w.flat_arrays(expected))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
