"""Per-step overhead of a ``MonitoredSession`` under ``torch.distributed`` (2 ranks, gloo).

Measured in the same run, a no-op step each time (so only the machinery is timed):

* bare:            ``for _ in range(n): step()`` in one process;
* one process:     ``MonitoredSession`` with ``StopAtStepHook`` (no torch.distributed);
* 2 ranks, bare:   the bare loop on each rank of a 2-rank gloo job;
* 2 ranks, session: the same session on each rank (sync point every K steps, default 100);
* 2 ranks, all-reduce per step: the design we avoid, a one-element all-reduce each step.

Prints µs/step (median of the repeats, rank 0's) and the overheads as ratios.

    python benchmarks/dist_step_overhead.py [--steps 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from trainhooks import MonitoredSession, StopAtStepHook


def no_op_step() -> None:
    return None


def time_bare(steps: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(steps):
        no_op_step()
    return (time.perf_counter_ns() - start) / steps / 1000


def time_session(steps: int, sync_every_steps: int = 100) -> float:
    hooks = [StopAtStepHook(num_steps=steps)]
    with MonitoredSession(hooks=hooks, state={}, sync_every_steps=sync_every_steps) as sess:
        start = time.perf_counter_ns()
        while not sess.should_stop():
            sess.run(no_op_step)
        elapsed = time.perf_counter_ns() - start
    return elapsed / steps / 1000


def median_of(repeats: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(repeats))


def rank_main(rank: int, world: int, port: int, steps: int, repeats: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    flag = torch.zeros(1)

    def all_reduce_per_step() -> float:
        n = max(steps // 10, 100)
        start = time.perf_counter_ns()
        for _ in range(n):
            no_op_step()
            dist.all_reduce(flag)
        return (time.perf_counter_ns() - start) / n / 1000

    results = {}
    for _ in range(repeats):  # interleaved, so that load from others hits all alike
        for name, measure in [
            ("bare", lambda: time_bare(steps)),
            ("session", lambda: time_session(steps)),
            ("all_reduce", all_reduce_per_step),
        ]:
            dist.barrier()
            results.setdefault(name, []).append(measure())
    if rank == 0:
        Path(out).write_text(json.dumps({k: statistics.median(v) for k, v in results.items()}))
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    one_bare = median_of(args.repeats, lambda: time_bare(args.steps))
    one_session = median_of(args.repeats, lambda: time_session(args.steps))

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ranks.json")
        mp.spawn(rank_main, args=(2, port, args.steps, args.repeats, out), nprocs=2, join=True)
        ranks = json.loads(Path(out).read_text())
    rows = [
        ("1 process, bare loop", one_bare),
        ("1 process, session", one_session),
        ("2 ranks, bare loop", ranks["bare"]),
        ("2 ranks, session (sync every 100 steps)", ranks["session"]),
        ("2 ranks, bare loop + all-reduce per step", ranks["all_reduce"]),
    ]
    print(f"{'':44s} {'µs/step':>9s}")
    for name, value in rows:
        print(f"{name:44s} {value:9.2f}")
    one_overhead = one_session - one_bare
    dist_overhead = ranks["session"] - ranks["bare"]
    per_step_reduce = ranks["all_reduce"] - ranks["bare"]
    print(f"session overhead, 1 process: {one_overhead:.2f} µs/step")
    print(f"session overhead, 2 ranks:   {dist_overhead:.2f} µs/step")
    print(f"ratio distributed / one-process session: {ranks['session'] / one_session:.2f}x")
    print(
        f"ratio distributed session overhead / one-process overhead: "
        f"{dist_overhead / max(one_overhead, 1e-9):.2f}x"
    )
    print(
        f"ratio all-reduce-per-step overhead / distributed session overhead: "
        f"{per_step_reduce / max(dist_overhead, 1e-9):.1f}x"
    )


if __name__ == "__main__":
    main()
