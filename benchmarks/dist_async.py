"""The stall of a collective save: ``save_sharded_async`` against the blocking ``save_sharded``.

The same state is saved by the same ranks (``mp.spawn``, gloo on CPU) both ways, with
interleaved repetitions (the order rotates every repetition). The state is ``--size-mib``
of float32 in DTensors sharded along dim 0 (each rank holds 1/N, as FSDP2 leaves
parameters and Adam moments). The stall is the time from a barrier until the call returns
(the slowest rank's): for ``save_sharded`` the whole save, for ``save_sharded_async`` the
copy of each rank's shards into its CPU staging buffers. ``total`` is until the async
save is durable (``result()`` on every rank). The first async save also allocates and
first-touches the staging buffers (reused afterwards): it is printed on its own line.
Noise only ever adds time: the ratio compares the best repetitions, medians beside them.

Then the same state is saved by a ``MonitoredTrainingSession`` (the chief's
``CheckpointSaverHook``, every other step) with ``async_save=False`` and ``True``: the stall
is the slowest rank's time of the ``run`` of a save step (no-op steps), once the previous
save has finished. Then again with ``--size-mib`` of whole tensors, the same on every rank
(replicated, as a DDP model: the single-process state layer's entry).

Usage: ``python benchmarks/dist_async.py [--size-mib 256] [--repeats 5] [--world 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard

from trainhooks import CheckpointSaverHook, MonitoredTrainingSession
from trainhooks.distributed import (
    DistributedState,
    save_sharded,
    save_sharded_async,
    wait_for_sharded_saves,
)

TENSOR_MIB = 16


def make_state(world: int, size_mib: int) -> dict[str, Any]:
    """``size_mib`` of float32 over DTensors of ``TENSOR_MIB`` each, sharded along dim 0."""
    mesh = init_device_mesh("cpu", (world,))
    generator = torch.Generator().manual_seed(dist.get_rank())
    rows = TENSOR_MIB * 256 // world
    tensors = {
        f"layer{i:03d}.weight": DTensor.from_local(
            torch.empty(rows, 1024).normal_(generator=generator), mesh, [Shard(0)]
        )
        for i in range(size_mib // TENSOR_MIB)
    }
    return {"model": tensors, "extra": {"step": 1, "lr": 0.001}}


def _slowest(seconds: float) -> float:
    box = torch.tensor([seconds], dtype=torch.float64)
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return float(box.item())


class Tensors(DistributedState):
    """The DTensors as one DCP-native entry of a session's state."""

    def __init__(self, tensors: dict[str, Any]) -> None:
        self.tensors = tensors

    def state_dict(self) -> dict[str, Any]:
        return self.tensors

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.tensors = state_dict


def make_replicated(size_mib: int) -> dict[str, Any]:
    """``size_mib`` of float32 in whole tensors, the same on every rank (a DDP model)."""
    generator = torch.Generator().manual_seed(0)
    return {
        f"layer{i:03d}.weight": torch.empty(TENSOR_MIB * 256, 1024).normal_(generator=generator)
        for i in range(size_mib // TENSOR_MIB)
    }


def session_stalls(directory: Path, state: dict[str, Any], async_save: bool, n: int) -> list[float]:
    """The slowest rank's time of each of ``n`` save steps of a session with ``state``
    (after the previous save finished)."""
    hook = CheckpointSaverHook(directory, save_steps=2, async_save=async_save, max_to_keep=1)
    stalls = []
    with MonitoredTrainingSession(
        checkpoint_dir=directory,
        state=state,
        chief_only_hooks=[hook],
        save_summaries_steps=None,
        log_step_count_steps=None,
        resume_check=False,
    ) as sess:
        for _ in range(n):
            sess.run(lambda: None)
            wait_for_sharded_saves()
            dist.barrier()
            start = time.perf_counter()
            sess.run(lambda: None)  # the save step
            stalls.append(_slowest(time.perf_counter() - start))
    return stalls


def worker(rank: int, world: int, port: int, args: dict[str, Any]) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    root = Path(args["dir"])
    state = make_state(world, args["size_mib"])
    replicated = make_replicated(args["size_mib"])
    times: dict[str, list[float]] = {"sync": [], "async": [], "async total": []}
    step = 0

    def run(method: str) -> None:
        nonlocal step
        step += 1
        dist.barrier()
        start = time.perf_counter()
        if method == "sync":
            save_sharded(state, root / "sync", step, max_to_keep=1)
            times["sync"].append(_slowest(time.perf_counter() - start))
            return
        future = save_sharded_async(state, root / "async", step, max_to_keep=1)
        stall = time.perf_counter() - start
        future.result()
        total = time.perf_counter() - start
        times["async"].append(_slowest(stall))
        times["async total"].append(_slowest(total))

    run("sync")  # warm-up: imports, planner caches, the groups
    run("async")  # the first async save: its staging buffers are allocated here
    first = {name: values.pop() for name, values in times.items() if name != "sync"}
    times["sync"].clear()
    for repeat in range(args["repeats"]):
        for method in ("sync", "async") if repeat % 2 == 0 else ("async", "sync"):
            run(method)
    sessions = {"": {"model": Tensors(state["model"])}, " replicated": {"model": replicated}}
    for kind, session_state in sessions.items():
        for async_save in (False, True):
            name = f"session{kind} async_save={async_save}"
            times[name] = session_stalls(root / name, session_state, async_save, args["repeats"])
    if rank == 0:
        Path(args["out"]).write_text(json.dumps({"times": times, "first": first}))
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(dir=args.dir)
    try:
        out = Path(scratch) / "result.json"
        config = {"dir": scratch, "size_mib": args.size_mib, "repeats": args.repeats}
        config["out"] = str(out)
        mp.spawn(worker, args=(args.world, _free_port(), config), nprocs=args.world, join=True)
        result = json.loads(out.read_text())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    times, first = result["times"], result["first"]
    print(f"{args.world} ranks, {args.size_mib} MiB float32 DTensors, {args.repeats} repetitions")
    print("| call | best s | median s |")
    print("|---|---|---|")
    for name in ("sync", "async", "async total"):
        label = {"sync": "save_sharded (stall = whole save)"}.get(name, f"save_sharded_{name}")
        print(f"| {label} | {min(times[name]):.3f} | {statistics.median(times[name]):.3f} |")
    print(
        f"| first async save: stall / total | {first['async']:.3f} | {first['async total']:.3f} |"
    )
    best = min(times["sync"]) / min(times["async"])
    median = statistics.median(times["sync"]) / statistics.median(times["async"])
    print(f"stall ratio save_sharded / save_sharded_async: {best:.1f}x best, {median:.1f}x median")
    for kind in ("", " replicated"):
        sync = times[f"session{kind} async_save=False"]
        background = times[f"session{kind} async_save=True"]
        for name, values in (("False", sync), ("True", background)):
            print(f"| session{kind} save step, async_save={name} | {min(values):.3f} | ", end="")
            print(f"{statistics.median(values):.3f} |")
        best = min(sync) / min(background)
        median = statistics.median(sync) / statistics.median(background)
        print(
            f"session{kind} stall ratio async_save False / True: {best:.1f}x best, "
            f"{median:.1f}x median"
        )


if __name__ == "__main__":
    main()
