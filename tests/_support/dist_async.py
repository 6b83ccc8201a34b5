"""Code run by each rank of ``tests/dist/test_async.py`` (one 2-rank ``mp.spawn`` launch).

Every scenario writes what the rank saw to ``result-<rank>.json`` and rank 0 writes the
expected arrays to ``.npz`` files; the test process asserts on them and on the disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from _support import dist_workers as w
from trainhooks._store import _faults
from trainhooks.distributed import save_sharded_async, wait_for_sharded_saves


def async_saves(rank: int, world: int, port: int, root: str) -> None:
    """Save while training goes on, two saves in a row, and a save failing on rank 1."""
    w.init(rank, world, port)
    base = Path(root)
    seen: dict[str, Any] = {}
    model = w.fsdp_model(world)
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    w.train(model, optim, 2)
    expected = w.full(w.state(model, optim))
    if rank == 0:
        np.savez(base / "expected-2.npz", **w.flat_arrays(expected))
    # Hold every rank's background save before its shard is written, train on (FSDP2's
    # collectives on the world group meanwhile) and mutate in place, then let it go.
    _faults.configure("before_shard_write=block")
    future = save_sharded_async(w.state(model, optim), base / "ckpt", 2, timeout=60)
    assert _faults.wait_blocked("before_shard_write")
    w.train(model, optim, 2, seed=5)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    _faults.release("before_shard_write")
    _faults.configure(None)
    info = future.result()
    seen["first"] = {"step": info.step, "path": str(info.path), "done": future.done()}
    # Two saves in a row: the second call waits for the first; they commit in order.
    w.train(model, optim, 1, seed=6)
    third = save_sharded_async(w.state(model, optim), base / "ckpt", 3, timeout=60)
    expected = w.full(w.state(model, optim))
    if rank == 0:
        np.savez(base / "expected-3.npz", **w.flat_arrays(expected))
    w.train(model, optim, 1, seed=7)
    fourth = save_sharded_async(w.state(model, optim), base / "ckpt", 4, timeout=60)
    seen["third_done_when_fourth_returned"] = third.done()
    wait_for_sharded_saves()
    seen["in_order"] = [third.result().sequence, fourth.result().sequence]
    # An I/O error on rank 1 only: the same typed error from both ranks' futures.
    if rank == 1:
        _faults.configure("before_shard_fsync=eio")
    failed = save_sharded_async(w.state(model, optim), base / "ckpt", 5, timeout=60)
    try:
        failed.result()
        seen["failed"] = None
    except Exception as exc:
        seen["failed"] = {
            "error": type(exc).__name__,
            "message": str(exc),
            "step": getattr(exc, "step", None),
        }
    _faults.configure(None)
    (base / f"result-{rank}.json").write_text(json.dumps(seen))
    dist.barrier()
    dist.destroy_process_group()
