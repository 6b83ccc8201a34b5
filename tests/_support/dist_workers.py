"""Code run by each rank of the distributed tests (``mp.spawn`` or ``torchrun``), gloo on CPU.

Each function performs several checks in one launch (a launch costs seconds): it raises on
the first failed check, which makes ``mp.spawn`` fail the test with that rank's traceback.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

import trainhooks
from trainhooks.distributed import ShardedReader, ShardedWriter, save_sharded


def free_port() -> int:
    """A free TCP port on loopback for a job's rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rank_results(root: Path, name: str) -> list[dict[str, Any]]:
    """What each rank of a 2-rank job wrote to ``root/results/<name>-<rank>.json``."""
    return [json.loads((root / "results" / f"{name}-{r}.json").read_text()) for r in (0, 1)]


def init(rank: int, world: int, port: int) -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def train(model: nn.Module, optim: torch.optim.Optimizer, steps: int, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(6, 8, generator=generator)
        loss = model(x).pow(2).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()


def fsdp_model(world: int, seed: int = 0) -> nn.Module:
    mesh = init_device_mesh("cpu", (world,))
    model = make_model(seed)
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def state(model: nn.Module, optim: torch.optim.Optimizer) -> dict[str, Any]:
    model_sd, optim_sd = get_state_dict(model, optim)
    return {"model": model_sd, "optim": optim_sd}


def full(value: Any) -> Any:
    """Every tensor of a state dict as a full NumPy array (DTensors gathered)."""
    if isinstance(value, DTensor):
        return value.full_tensor().detach().numpy().copy()
    if isinstance(value, torch.Tensor):
        return value.detach().numpy().copy()
    if isinstance(value, dict):
        return {k: full(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(full(v) for v in value)
    return value


def assert_same(actual: Any, expected: Any, where: str = "") -> None:
    """Bit-exact equality of nested states (arrays by bytes, lists and tuples alike)."""
    if isinstance(expected, np.ndarray):
        actual = np.asarray(actual)
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, where
        assert actual.tobytes() == expected.tobytes(), f"{where} differs"
    elif isinstance(expected, dict):
        assert set(map(str, actual)) == set(map(str, expected)), f"{where}: keys differ"
        by_str = {str(k): v for k, v in actual.items()}
        for key, value in expected.items():
            assert_same(by_str[str(key)], value, f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{where}/{i}")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def save_and_reload_2(rank: int, world: int, port: int, root: str) -> None:
    """Launch A (2 ranks): replicated and FSDP2 model + Adam saved, reloaded bit-exact;
    a 1-process checkpoint loaded onto 2 FSDP2 ranks."""
    init(rank, world, port)
    base = Path(root)
    # Replicated (DDP-style: the same model on every rank).
    model = make_model()
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    train(model, optim, 2)
    saved = state(model, optim)
    expected = full(saved)
    writer = ShardedWriter(base / "rep", 2, metadata={"kind": "replicated"})
    dcp.save(saved, storage_writer=writer)
    train(model, optim, 1, seed=7)  # move away from the saved values
    target = state(model, optim)
    dcp.load(target, storage_reader=ShardedReader(base / "rep" / "ckpt-000000000002"))
    assert_same(full(target), expected, "replicated")
    # Retention: rank 0 keeps the newest two of four collective saves.
    for step in range(1, 5):
        info = save_sharded(saved, base / "keep", step, max_to_keep=2)
        assert info.step == step and info.sequence == step, info
    # FSDP2 (parameters and Adam moments sharded along dim 0).
    model = fsdp_model(world)
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    train(model, optim, 2)
    saved = state(model, optim)
    expected = full(saved)
    dcp.save(saved, storage_writer=ShardedWriter(base / "fsdp", 2))
    if rank == 0:
        np.savez(base / "fsdp-expected.npz", **flat_arrays(expected))
    train(model, optim, 1, seed=7)
    target = state(model, optim)
    dcp.load(target, storage_reader=ShardedReader(base / "fsdp" / "ckpt-000000000002"))
    assert_same(full(target), expected, "fsdp")
    train(model, optim, 1)  # training goes on from the loaded state
    # 1 -> 2: a checkpoint saved by one process, loaded onto two FSDP2 ranks.
    model = fsdp_model(world, seed=3)
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    train(model, optim, 1)
    target = state(model, optim)
    dcp.load(target, storage_reader=ShardedReader(base / "one" / "ckpt-000000000005"))
    one = dict(np.load(base / "one-expected.npz"))
    assert_same(flat_arrays(full(target)), one, "1 -> 2")
    dist.barrier()
    dist.destroy_process_group()


def reshard_to_4(rank: int, world: int, port: int, root: str) -> None:
    """Launch B (4 ranks): the 2-rank FSDP2 and replicated checkpoints loaded onto 4 ranks,
    then a 4-rank save (read back by one process in the test)."""
    init(rank, world, port)
    base = Path(root)
    model = fsdp_model(world, seed=5)
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    train(model, optim, 1)
    target = state(model, optim)
    dcp.load(target, storage_reader=ShardedReader(base / "fsdp" / "ckpt-000000000002"))
    expected = dict(np.load(base / "fsdp-expected.npz"))
    assert_same(flat_arrays(full(target)), expected, "2 -> 4")
    dcp.save(target, storage_writer=ShardedWriter(base / "fsdp4", 4))
    replicated = make_model(seed=9)
    roptim = torch.optim.Adam(replicated.parameters(), lr=0.01)
    train(replicated, roptim, 1)
    rtarget = state(replicated, roptim)
    dcp.load(rtarget, storage_reader=ShardedReader(base / "rep" / "ckpt-000000000002"))
    loaded = trainhooks.load(base / "rep" / "ckpt-000000000002")
    assert_same(flat_arrays(full(rtarget)), flat_arrays(loaded), "replicated 2 -> 4")
    dist.barrier()
    dist.destroy_process_group()


def flat_arrays(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """The arrays of a nested state by their path (for comparing across world sizes)."""
    out: dict[str, np.ndarray] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(flat_arrays(value, f"{prefix}{key}/"))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            out.update(flat_arrays(value, f"{prefix}{i}/"))
    elif isinstance(tree, np.ndarray):
        out[prefix.rstrip("/")] = tree
    return out
