"""Asynchronous saving: what the training thread pays per save, and what the background costs.

Measured side by side in one run, for each state size (float32 torch tensors):

stall       ``copy_`` of the same tensors into preallocated, already-touched buffers (the
            memory-copy limit) vs trainhooks ``Saver.save_async`` (returns once the snapshot
            is taken) vs ``torch.distributed.checkpoint.async_save`` (single-process gloo
            group, default stager) vs synchronous ``Saver.save`` (the whole durable write);
background  the time from ``save_async`` returning to the checkpoint being durable (crc32c,
            both fsyncs, rename, parent fsync) vs raw ``os.write`` + ``fsync`` of the same
            bytes, as MB/s;
RSS         extra peak RSS over three saves in a row, each method in a fresh child process
            (VmHWM reset through ``/proc/self/clear_refs`` before the first save): the
            staging buffers of trainhooks are allocated at the first save and reused;
loop        a training loop (a matmul of about 20 ms, then a small in-place update of
            the state) that saves every N steps (N = 300, about 6 s, for 1 GiB; 40 for
            64 MiB), asynchronously or synchronously: intervals of N/2 steps that begin
            with a save alternate with intervals without one, and the difference of
            neighbours is the overhead per save; repeated with a pure-Python step of
            about the same length, which holds the GIL throughout, to see what the
            background thread costs then.

Repetitions rotate the order of the methods. Noise on this shared VM only adds time, so
verdicts use each method's best repetition (as ``timeit`` does), with medians beside.

Usage: ``python benchmarks/async_save.py [--sizes 1024 64] [--repeats 5] [--dir PATH]
[--no-rss] [--no-loop]`` (about 3 minutes for the defaults on the 2-core VM).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

MIB = 1024 * 1024
COPY, ASYNC, SYNC, DCP, RAW = "copy_", "save_async", "Saver.save", "dcp.async_save", "raw"
GOAL_STALL, GOAL_BACKGROUND, GOAL_RSS = 1.2, 0.85, (1.05, 64)


# -- the state and the methods ------------------------------------------------------------


def make_state(size_mib: int) -> dict[str, torch.Tensor]:
    """``size_mib`` of random float32 in tensors of at most 64 MiB (at least four)."""
    tensor_mib = max(1, min(64, size_mib // 4))
    generator = torch.Generator().manual_seed(0)
    return {
        f"layer{i:03d}.weight": torch.empty(tensor_mib * 256, 1024).normal_(generator=generator)
        for i in range(size_mib // tensor_mib)
    }


def nbytes_of(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def touched_like(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Buffers like ``state``'s, written once so that their pages exist."""
    return {name: torch.ones_like(t) for name, t in state.items()}


def copy_into(buffers: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
    for name, tensor in state.items():
        buffers[name].copy_(tensor)


def raw_write(state: dict[str, torch.Tensor], path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for tensor in state.values():
            view, done = memoryview(tensor.reshape(-1).view(torch.uint8).numpy()), 0
            while done < len(view):
                done += os.write(fd, view[done : done + 8 * MIB])
        os.fsync(fd)
    finally:
        os.close(fd)


def init_gloo(workdir: Path) -> None:
    """A single-process gloo group: what ``dcp.async_save`` needs on one machine."""
    import torch.distributed as dist

    if not dist.is_initialized():
        store = workdir / f"pg-{os.getpid()}"
        dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{store}")


def dcp_async(state: dict[str, torch.Tensor], path: Path) -> Any:
    import torch.distributed.checkpoint as dcp

    return dcp.async_save(state, checkpoint_id=os.fspath(path))


# -- stall and background ------------------------------------------------------------------


class Timings:
    """Each method's times over the repetitions (seconds)."""

    def __init__(self) -> None:
        self.stall: dict[str, list[float]] = {m: [] for m in (COPY, ASYNC, DCP, SYNC)}
        self.paired: list[float] = []  # save_async stall / copy_ of the same repetition
        self.background: dict[str, list[float]] = {ASYNC: [], DCP: [], RAW: [], SYNC: []}


def time_methods(state: dict[str, torch.Tensor], workdir: Path, repeats: int) -> Timings:
    from trainhooks import Saver

    buffers = touched_like(state)
    timings = Timings()
    saver = Saver(max_to_keep=None)  # old checkpoints are removed outside the timings
    shutil.rmtree(saver.save_async(state, workdir / "th", 0).result().path)  # allocates staging
    dcp_async(state, workdir / "dcp-warm").result()  # sets up DCP's executor and stager
    shutil.rmtree(workdir / "dcp-warm")

    def run_copy(r: int) -> None:
        started = time.perf_counter()
        copy_into(buffers, state)
        timings.stall[COPY].append(time.perf_counter() - started)

    def run_async(r: int) -> None:
        started = time.perf_counter()
        future = saver.save_async(state, workdir / "th", r + 1)
        returned = time.perf_counter()
        info = future.result()
        timings.stall[ASYNC].append(returned - started)
        timings.background[ASYNC].append(time.perf_counter() - returned)
        shutil.rmtree(info.path)

    def run_dcp(r: int) -> None:
        path = workdir / f"dcp-{r}"
        started = time.perf_counter()
        future = dcp_async(state, path)
        returned = time.perf_counter()
        future.result()
        timings.stall[DCP].append(returned - started)
        timings.background[DCP].append(time.perf_counter() - returned)
        shutil.rmtree(path)

    def run_sync(r: int) -> None:
        started = time.perf_counter()
        info = saver.save(state, workdir / "th", 1000 + r)
        timings.stall[SYNC].append(time.perf_counter() - started)
        timings.background[SYNC].append(timings.stall[SYNC][-1])
        shutil.rmtree(info.path)

    def run_raw(r: int) -> None:
        started = time.perf_counter()
        raw_write(state, workdir / "raw.bin")
        timings.background[RAW].append(time.perf_counter() - started)
        os.unlink(workdir / "raw.bin")

    runs: list[Callable[[int], None]] = [run_copy, run_async, run_dcp, run_sync, run_raw]
    for r in range(repeats):
        shift = r % len(runs)
        for run in runs[shift:] + runs[:shift]:
            run(r)
        timings.paired.append(timings.stall[ASYNC][-1] / timings.stall[COPY][-1])
    saver.close()
    return timings


# -- extra peak RSS, in children -----------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_child(method: str, size_mib: int, workdir: str) -> None:
    """Three saves in a row; prints the extra peak RSS and the first save's stall."""
    directory = Path(workdir)
    state = make_state(size_mib)
    if method == DCP:
        init_gloo(directory)
    from trainhooks import Saver

    saver = Saver(max_to_keep=1)
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := the current RSS
    stalls = []
    for step in range(3):
        started = time.perf_counter()
        if method == ASYNC:
            future: Any = saver.save_async(state, directory / "th", step)
        elif method == DCP:
            future = dcp_async(state, directory / f"dcp-{step}")
        else:
            saver.save(state, directory / "th", step)
            future = None
        stalls.append(time.perf_counter() - started)
        if future is not None:
            future.result()  # as max_pending=1 would before the next save
        state[next(iter(state))].add_(1.0)  # training goes on between saves
    peak = _status_kib("VmHWM")
    saver.close()
    print(json.dumps({"extra_mib": (peak - before) / 1024, "first_stall": stalls[0]}))


def measure_rss(size_mib: int, workdir: Path) -> dict[str, dict[str, float]]:
    results = {}
    for method in (ASYNC, DCP, SYNC):
        child_dir = Path(tempfile.mkdtemp(dir=workdir))
        done = subprocess.run(
            [sys.executable, __file__, "--rss-child", method, str(size_mib), str(child_dir)],
            capture_output=True,
            text=True,
            check=True,
        )
        results[method] = json.loads(done.stdout.strip().splitlines()[-1])
        shutil.rmtree(child_dir)
    return results


# -- a training loop -------------------------------------------------------------------------


def _update(state: dict[str, torch.Tensor], step: int) -> None:
    """A small in-place change of the state, so that each snapshot differs."""
    tensors = list(state.values())
    tensors[step % len(tensors)][:1024].add_(1e-3)


def torch_step(state: dict[str, torch.Tensor], work: list[torch.Tensor], step: int) -> None:
    """A matmul (the model's compute; torch releases the GIL) and a small update."""
    torch.mm(work[0], work[1], out=work[2])
    _update(state, step)


def python_step(state: dict[str, torch.Tensor], work: list[torch.Tensor], step: int) -> None:
    """Pure-Python work of about the same length: it holds the GIL throughout."""
    total = 0
    for i in range(PYTHON_STEP_ITERATIONS):
        total += i * i
    _update(state, step)


PYTHON_STEP_ITERATIONS = 200_000


def run_loop(
    state: dict[str, torch.Tensor],
    workdir: Path,
    step_fn: Callable[..., None],
    mode: str,
    interval: int,
    rounds: int,
) -> dict[str, float]:
    """Alternate intervals of ``interval`` steps that begin with a save and intervals
    without one, ``rounds`` times each; the save intervals' extra time over the plain ones
    next to them is what a user saving every ``2 * interval`` steps pays."""
    from trainhooks import Saver

    work = [torch.randn(768, 768), torch.randn(768, 768), torch.empty(768, 768)]
    saver = Saver(max_to_keep=1)
    saver.save_async(state, workdir / "loop", 0).result()  # staging buffers exist
    spans: list[float] = []
    with_save: list[float] = []
    plain: list[float] = []
    step = 0
    for _ in range(rounds):
        for saving in (True, False):
            started = time.perf_counter()
            if saving and mode == ASYNC:
                future = saver.save_async(state, workdir / "loop", step)
                returned = time.perf_counter()
                future.add_done_callback(
                    lambda _f, t=returned: spans.append(time.perf_counter() - t)
                )
            elif saving:
                saver.save(state, workdir / "loop", step)
            for _ in range(interval):
                step += 1
                step_fn(state, work, step)
            (with_save if saving else plain).append(time.perf_counter() - started)
    saver.close()
    shutil.rmtree(workdir / "loop", ignore_errors=True)
    extra = statistics.median(w - p for w, p in zip(with_save, plain, strict=True))
    base = statistics.median(plain) / interval
    return {
        "plain_ms": 1000 * base,
        "with_saves_ms": 1000 * (base + extra / (2 * interval)),
        "overhead_pct": 100 * extra / (2 * interval * base),
        "extra_per_save_ms": 1000 * extra,
        "background_mbps": nbytes_of(state) / 1e6 / statistics.median(spans) if spans else 0.0,
    }


def measure_loops(
    state: dict[str, torch.Tensor], workdir: Path, interval: int, rounds: int
) -> dict[str, dict[str, float]]:
    results = {}
    for name, step_fn, mode in (
        (f"torch step, {ASYNC}", torch_step, ASYNC),
        (f"torch step, {SYNC}", torch_step, SYNC),
        (f"Python step, {ASYNC}", python_step, ASYNC),
    ):
        results[name] = run_loop(state, workdir, step_fn, mode, interval, rounds)
    return results


# -- report ---------------------------------------------------------------------------------


def _best(times: list[float]) -> float:
    return min(times)


def _fmt_s(times: list[float]) -> str:
    return f"{1000 * _best(times):.0f} / {1000 * statistics.median(times):.0f}"


def report(size_mib: int, nbytes: int, timings: Timings, rss: Any, loops: Any) -> dict[str, Any]:
    copy = _best(timings.stall[COPY])
    print(f"\n### {size_mib} MiB of float32 ({nbytes / MIB:.0f} MiB)\n")
    print("| training-thread stall per save | ms best / median | × copy_ (best) |")
    print("|---|---:|---:|")
    for method in (COPY, ASYNC, DCP, SYNC):
        times = timings.stall[method]
        print(f"| {method} | {_fmt_s(times)} | {_best(times) / copy:.2f} |")
    paired = statistics.median(timings.paired)
    print(f"\nsave_async / copy_, median of the per-repetition ratios: {paired:.2f}")
    raw = _best(timings.background[RAW])
    print("\n| write until durable | MB/s best | MB/s median | × raw (best) |")
    print("|---|---:|---:|---:|")
    for method in (RAW, SYNC, ASYNC, DCP):
        times = timings.background[method]
        best, median = nbytes / 1e6 / _best(times), nbytes / 1e6 / statistics.median(times)
        print(f"| {method} | {best:.0f} | {median:.0f} | {raw / _best(times):.2f} |")
    summary: dict[str, Any] = {
        "size_mib": size_mib,
        "stall_x_copy": _best(timings.stall[ASYNC]) / copy,
        "stall_x_copy_paired_median": paired,
        "dcp_stall_x_copy": _best(timings.stall[DCP]) / copy,
        "background_x_raw": raw / _best(timings.background[ASYNC]),
        "background_x_sync": _best(timings.background[SYNC]) / _best(timings.background[ASYNC]),
    }
    if rss:
        state_mib = nbytes / MIB
        print(
            "\n| 3 saves in a row, fresh process | extra peak RSS MiB | × state | first stall ms |"
        )
        print("|---|---:|---:|---:|")
        for method, value in rss.items():
            extra = value["extra_mib"]
            first = 1000 * value["first_stall"]
            print(f"| {method} | {extra:.0f} | {extra / state_mib:.2f} | {first:.0f} |")
        summary["rss_extra_mib"] = rss[ASYNC]["extra_mib"]
        summary["rss_budget_mib"] = GOAL_RSS[0] * state_mib + GOAL_RSS[1]
    if loops:
        print(
            "\n| training loop, a save every N steps | ms/step without saves | ms/step with "
            "| overhead | extra ms per save | background MB/s |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for name, v in loops.items():
            mbps = f"{v['background_mbps']:.0f}" if v["background_mbps"] else "-"
            print(
                f"| {name} | {v['plain_ms']:.1f} | {v['with_saves_ms']:.1f} | "
                f"{v['overhead_pct']:+.1f} % | {v['extra_per_save_ms']:.0f} | {mbps} |"
            )
        summary["loop_overhead_pct"] = loops[f"torch step, {ASYNC}"]["overhead_pct"]
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 64], help="MiB")
    parser.add_argument("--repeats", type=int, default=5, help="(three times as many < 256 MiB)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: cwd)")
    parser.add_argument("--no-rss", action="store_true")
    parser.add_argument("--no-loop", action="store_true")
    parser.add_argument("--rss-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        method, size, workdir = args.rss_child
        rss_child(method, int(size), workdir)
        return
    torch.set_num_threads(min(2, torch.get_num_threads()))
    workdir = Path(tempfile.mkdtemp(prefix="async-bench-", dir=args.dir or Path.cwd()))
    started = time.perf_counter()
    print(f"load average at start: {os.getloadavg()}; torch {torch.__version__}")
    summaries = []
    try:
        init_gloo(workdir)
        for size_mib in args.sizes:
            state = make_state(size_mib)
            repeats = args.repeats if size_mib >= 256 else 3 * args.repeats
            timings = time_methods(state, workdir, repeats)
            rss = None if args.no_rss else measure_rss(size_mib, workdir)
            loops = None
            if not args.no_loop:
                interval, rounds = (150, 3) if size_mib >= 256 else (20, 5)
                loops = measure_loops(state, workdir, interval, rounds)
            summaries.append(report(size_mib, nbytes_of(state), timings, rss, loops))
            del state
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nload average at end: {os.getloadavg()}; {time.perf_counter() - started:.0f} s")
    print(json.dumps({"summaries": summaries}))


if __name__ == "__main__":
    main()
