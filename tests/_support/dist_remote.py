"""Scenarios run by each rank of tests/dist/test_remote_sharded.py: sharded checkpoints in
object storage (the moto server; its endpoint and credentials reach the ranks through the
environment they inherit), 2 ranks on gloo, one launch for all of them.

Each scenario writes what the rank saw to ``<root>/results/<scenario>-<rank>.json`` and
raises on a failed check inside the rank (``mp.spawn`` then fails the fixture).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from _support import dist_session as s
from _support import dist_workers as w
from trainhooks import CheckpointError
from trainhooks._store import _faults
from trainhooks.distributed import (
    load_sharded,
    save_sharded,
    save_sharded_async,
    wait_for_sharded_saves,
)


def scenario_sharded(root: Path, url: str, rank: int, world: int) -> None:
    """FSDP2 + Adam saved at steps 1 and 2 into ``url``, loaded back bit-exact; then a save
    whose upload fails on rank 1 only: the same typed error on both ranks."""
    model = w.fsdp_model(world)
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    w.train(model, optim, 1)
    first = save_sharded(w.state(model, optim), url, 1, metadata={"kind": "fsdp"})
    w.train(model, optim, 1, seed=2)
    saved = w.state(model, optim)
    expected = w.full(saved)
    info = save_sharded(saved, url, 2, max_to_keep=5)
    if rank == 0:
        np.savez(root / "sharded-expected.npz", **w.flat_arrays(expected))
    w.train(model, optim, 1, seed=7)  # move away from the saved values
    target = w.state(model, optim)
    load_sharded(target, str(info.path), timeout=60)
    w.assert_same(w.full(target), expected, "loaded from object storage")
    _faults.configure("remote_before_shard_upload=eio" if rank == 1 else "")
    try:
        save_sharded(w.state(model, optim), url, 3)
        failed: dict[str, Any] | None = None
    except CheckpointError as exc:
        failed = {"error": type(exc).__name__, "message": str(exc), "step": exc.step}
    finally:
        _faults.configure("")
    future = save_sharded_async(w.state(model, optim), url, 4, timeout=60)
    w.train(model, optim, 1, seed=8)  # while the upload may still run
    background = future.result()
    wait_for_sharded_saves()
    s.save(
        root,
        "sharded",
        rank,
        {
            "paths": [str(first.path), str(info.path)],
            "sequences": [first.sequence, info.sequence],
            "failed": failed,
            "background": str(background.path),
        },
    )


def scenario_options(url: str, rank: int) -> None:
    """Rank 0's ``storage_options`` reach rank 1 with the plan: rank 1's own environment
    names a closed port as the endpoint (run first, before rank 1 made any client)."""
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    if rank == 1:
        os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # nothing listens there
    options = {"client_kwargs": {"endpoint_url": endpoint}} if rank == 0 else None
    try:
        info = save_sharded({"w": torch.arange(4.0)}, url, 1, storage_options=options)
    finally:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
    assert info.path.name == "ckpt-000000000001", info


def scenario_session(root: Path, url: str, rank: int) -> None:
    """A DDP session saving every 4 steps into ``url``: straight to 8 (and again with
    background saves), and crashed at 6 then
    resumed from 4; then the newest checkpoint's largest shard object damaged: every rank
    falls back to step 4 and trains on to the same state."""
    straight = s.ddp_run(f"{url}/straight", rank, 8)
    background = s.ddp_run(f"{url}/background", rank, 8, async_save=True)
    run = f"{url}/resumed"
    try:
        s.ddp_run(run, rank, 8, crash_at=6)
        raise AssertionError("expected the crash")
    except s.Crash:
        pass
    resumed = s.ddp_run(run, rank, 8)
    if rank == 0:
        damage_largest_shard(f"{run}/ckpt-000000000008")
    dist.barrier()
    fallback = s.ddp_run(run, rank, 8)
    results = {"straight": straight, "background": background, "resumed": resumed}
    s.save(root, "session", rank, {**results, "fallback": fallback})


def damage_largest_shard(prefix_url: str) -> str:
    """Flip one bit near the end of the largest shard object of a checkpoint (its size,
    and so the structure check, unchanged: only the chunk's crc32c can tell)."""
    import fsspec

    fs, prefix = fsspec.core.url_to_fs(prefix_url, use_listings_cache=False)
    sizes = {p: int(i["size"]) for p, i in fs.find(prefix, detail=True).items()}
    shard = max((p for p in sizes if p.rsplit("/", 1)[1].startswith("shard-")), key=sizes.get)
    data = bytearray(fs.cat_file(shard))
    data[-5] ^= 0x40
    fs.pipe_file(shard, bytes(data))
    return str(shard)


def two_ranks(rank: int, world: int, port: int, root: str, url: str) -> None:
    """The one 2-rank launch of tests/dist/test_remote_sharded.py."""
    w.init(rank, world, port)
    base = Path(root)
    scenario_options(f"{url}/options", rank)
    scenario_sharded(base, f"{url}/sharded", rank, world)
    scenario_session(base, url, rank)
    dist.barrier()
    dist.destroy_process_group()
