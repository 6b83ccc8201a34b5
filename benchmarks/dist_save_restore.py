"""Collective save and restore: trainhooks' ShardedWriter/Reader against DCP's FileSystem ones.

The same state is saved and loaded by the same ranks (``mp.spawn``, gloo on CPU, 2 then 4
ranks) through both storages in one run, with interleaved repetitions (the order rotates
every repetition). The state is ``--size-mib`` of float32 in DTensors sharded along dim 0
(each rank holds 1/N, as FSDP2 leaves parameters and Adam moments) plus a few non-tensor
values. A repetition's time runs from a barrier before the call to a barrier after it, on
rank 0, so it is the job's time, not one rank's.

ours   ``save_sharded`` / ``load_sharded``: one safetensors shard per rank, crc32c of every
       chunk while writing, fsync of the files and of the staging and parent directories,
       an atomic rename commit; every chunk verified on load
DCP    ``dcp.save(storage_writer=FileSystemWriter(path))`` (fsync of its files, no directory
       fsync, pickled metadata) / ``dcp.load(storage_reader=FileSystemReader(path))``

The page cache is dropped before every load when this process may write
``/proc/sys/vm/drop_caches`` (root); otherwise loads are warm-cache figures and the output
says so. Noise only ever adds time: the verdict compares the best repetitions (as
``timeit`` does); medians are printed beside them.

Usage: ``python benchmarks/dist_save_restore.py [--size-mib 256] [--repeats 5] [--worlds 2 4]``
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard

from trainhooks.distributed import load_sharded, save_sharded

OURS, DCP = "trainhooks", "DCP FileSystem"
TARGET = 0.9
TENSOR_MIB = 16
DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def make_state(world: int, size_mib: int, seed: int) -> dict[str, Any]:
    """``size_mib`` of float32 over DTensors of ``TENSOR_MIB`` each, sharded along dim 0."""
    mesh = init_device_mesh("cpu", (world,))
    generator = torch.Generator().manual_seed(seed + dist.get_rank())
    rows = TENSOR_MIB * 256 // world  # each rank's rows of a (TENSOR_MIB * 256, 1024) tensor
    tensors: dict[str, Any] = {}
    for i in range(size_mib // TENSOR_MIB):
        local = torch.empty(rows, 1024).normal_(generator=generator)
        tensors[f"layer{i:03d}.weight"] = DTensor.from_local(local, mesh, [Shard(0)])
    return {"model": tensors, "extra": {"step": 1000 + seed, "lr": 0.001, "betas": [0.9, 0.999]}}


def _can_drop_caches() -> bool:
    return os.access(DROP_CACHES, os.W_OK)


def _drop_caches() -> None:
    os.sync()
    DROP_CACHES.write_text("3\n")


def _timed(call: Callable[[], None], before: Callable[[], None] | None = None) -> float:
    if before is not None and dist.get_rank() == 0:
        before()
    dist.barrier()
    start = time.perf_counter()
    call()
    dist.barrier()
    return time.perf_counter() - start


def worker(rank: int, world: int, port: int, args: dict[str, Any]) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    root = Path(args["dir"])
    state = make_state(world, args["size_mib"], 0)
    target = make_state(world, args["size_mib"], 1)
    drop = _drop_caches if _can_drop_caches() else None
    times: dict[str, dict[str, list[float]]] = {op: {OURS: [], DCP: []} for op in ("save", "load")}

    def save(method: str, step: int) -> Callable[[], None]:
        def call() -> None:
            if method == OURS:
                save_sharded(state, root / "ours", step)
            else:
                dcp.save(state, storage_writer=FileSystemWriter(root / "dcp" / str(step)))

        return call

    def load(method: str, step: int) -> Callable[[], None]:
        def call() -> None:
            if method == OURS:
                load_sharded(target, root / "ours" / f"ckpt-{step:012d}")
            else:
                dcp.load(target, storage_reader=FileSystemReader(root / "dcp" / str(step)))

        return call

    # One warm-up of each (imports, planner caches, first-touch of the load targets).
    for method in (OURS, DCP):
        _timed(save(method, 0))
        _timed(load(method, 0))
    for repeat in range(args["repeats"]):
        order = [OURS, DCP] if repeat % 2 == 0 else [DCP, OURS]
        step = repeat + 1
        for method in order:
            times["save"][method].append(_timed(save(method, step)))
        for method in order:
            times["load"][method].append(_timed(load(method, step), drop))
        if rank == 0:  # keep the disk small: only the newest of each
            for old in (root / "ours" / f"ckpt-{step - 1:012d}", root / "dcp" / str(step - 1)):
                shutil.rmtree(old, ignore_errors=True)
        dist.barrier()
    if rank == 0:
        Path(args["out"]).write_text(json.dumps({"times": times, "cold": drop is not None}))
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def report(world: int, size_mib: int, result: dict[str, Any]) -> list[str]:
    lines = []
    for op, by_method in result["times"].items():
        best = {m: min(t) for m, t in by_method.items()}
        median = {m: statistics.median(t) for m, t in by_method.items()}
        cache = "" if op == "save" else (" (cold cache)" if result["cold"] else " (warm cache)")
        for method in (OURS, DCP):
            lines.append(
                f"| {world} | {op}{cache} | {method} | {size_mib / best[method]:.0f} | "
                f"{size_mib / median[method]:.0f} |"
            )
        ratio_best = best[DCP] / best[OURS]
        ratio_median = median[DCP] / median[OURS]
        verdict = "meets" if ratio_best >= TARGET else "BELOW"
        lines.append(
            f"| {world} | {op}{cache} | ratio ours/DCP | {ratio_best:.2f}x | "
            f"{ratio_median:.2f}x | {verdict} the {TARGET}x goal (best)"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worlds", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    print(f"state: {args.size_mib} MiB float32 DTensors (Shard(0)), {args.repeats} repetitions")
    print("| ranks | operation | storage | best MiB/s | median MiB/s |")
    print("|---|---|---|---|---|")
    for world in args.worlds:
        with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
            out = Path(scratch) / "result.json"
            config = {
                "dir": scratch,
                "size_mib": args.size_mib,
                "repeats": args.repeats,
                "out": str(out),
            }
            mp.spawn(worker, args=(world, _free_port(), config), nprocs=world, join=True)
            for line in report(world, args.size_mib, json.loads(out.read_text())):
                print(line, flush=True)


if __name__ == "__main__":
    main()
