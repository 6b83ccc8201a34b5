"""Durable save and verified restore of a float32 state: trainhooks against the physical limit.

Measured side by side in one run, with interleaved repetitions (the order rotates every
repetition so no method always runs first on a warm or cold machine):

save     raw ``os.write`` + ``fsync`` of the same bytes (the physical limit)
         trainhooks ``Saver.save`` (durable commit: crc32c, manifest, directory fsyncs)
         ``torch.save`` + fsync, ``safetensors.torch.save_file`` + fsync
restore  raw ``readinto`` preallocated buffers (no checksum)
         trainhooks ``Saver.restore`` in place with crc32c verification (the default)
         ``torch.load(weights_only=True)``, ``safetensors.torch.load_file``

The page cache is dropped before every restore when this process may write
``/proc/sys/vm/drop_caches`` (root); otherwise restores are warm-cache figures and the table
says so. Extra peak RSS of each save is measured in a fresh child process (peak RSS reset
through ``/proc/self/clear_refs`` just before the save; VmHWM read after it).

Noise only ever adds time, so the verdicts compare the best repetition of each method (as
``timeit`` does); medians and per-repetition paired ratios are printed beside them.

Usage: ``python benchmarks/save_restore.py [--size-mib 1024] [--repeats 3] [--dir PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

RAW, OURS, TORCH, SAFETENSORS = "raw write/read", "trainhooks", "torch", "safetensors"
METHODS = [RAW, OURS, TORCH, SAFETENSORS]
TARGET_SAVE, TARGET_RESTORE = 0.9, 0.8


def make_state(size_mib: int, tensor_mib: int) -> dict[str, torch.Tensor]:
    """``size_mib`` of float32 in tensors of ``tensor_mib`` (random values, no temporaries)."""
    generator = torch.Generator().manual_seed(0)
    count, remainder = divmod(size_mib, tensor_mib)
    sizes = [tensor_mib] * count + ([remainder] if remainder else [])
    state = {}
    for i, mib in enumerate(sizes):
        tensor = torch.empty(mib * 256, 1024, dtype=torch.float32)  # mib MiB of float32
        state[f"layer{i:03d}.weight"] = tensor.normal_(generator=generator)
    return state


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _raw_bytes(tensor: torch.Tensor) -> memoryview:
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())


def raw_save(state: dict[str, torch.Tensor], path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for tensor in state.values():
            view, done = _raw_bytes(tensor), 0
            while done < len(view):
                done += os.write(fd, view[done:])
        os.fsync(fd)
    finally:
        os.close(fd)


def raw_restore(target: dict[str, torch.Tensor], path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        for tensor in target.values():
            view, done = _raw_bytes(tensor), 0
            while done < len(view):
                done += f.readinto(view[done:])


def torch_save(state: dict[str, torch.Tensor], path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


def safetensors_save(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file(state, os.fspath(path))
    _fsync_path(path)


def trainhooks_save(state: dict[str, torch.Tensor], path: Path) -> None:
    from trainhooks import Saver

    with Saver(max_to_keep=None) as saver:
        saver.save(state, path, step=1)


def trainhooks_restore(target: dict[str, torch.Tensor], path: Path) -> None:
    from trainhooks import Saver

    Saver().restore(target, path, step=1)  # verify_on_restore=True is the default


def _copy_into(target: dict[str, torch.Tensor], loaded: dict[str, torch.Tensor]) -> None:
    """What ``load_state_dict`` does: copy every loaded tensor into the model's own."""
    with torch.no_grad():
        for name, tensor in target.items():
            tensor.copy_(loaded[name])


def torch_restore(target: dict[str, torch.Tensor], path: Path) -> None:
    _copy_into(target, torch.load(path, weights_only=True))


def safetensors_restore(target: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import load_file

    _copy_into(target, load_file(os.fspath(path)))  # load_file maps lazily: copy = read


SAVERS: dict[str, Callable[[dict[str, torch.Tensor], Path], None]] = {
    RAW: raw_save,
    OURS: trainhooks_save,
    TORCH: torch_save,
    SAFETENSORS: safetensors_save,
}
RESTORERS: dict[str, Callable[[dict[str, torch.Tensor], Path], None]] = {
    RAW: raw_restore,
    OURS: trainhooks_restore,
    TORCH: torch_restore,
    SAFETENSORS: safetensors_restore,
}


def drop_page_cache() -> bool:
    """Write back and drop the page cache; False when not permitted (not root)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def _clear_target(method: str, workdir: Path) -> Path:
    path = workdir / method.replace(" ", "_").replace("/", "_")
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    return path


def _timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def run_timings(
    state: dict[str, torch.Tensor], workdir: Path, repeats: int, cold: bool
) -> dict[str, dict[str, list[float]]]:
    """Seconds per (operation, method), one figure per repeat.

    Each repeat runs every method twice, in a mirrored order (A B C D D C B A, the order
    rotating between repeats) and keeps the mean of the two: on a machine whose disk speed
    drifts (shared hosts, burst budgets), drift then hits every method alike.
    """
    target = {name: torch.empty_like(t) for name, t in state.items()}
    times: dict[str, dict[str, list[float]]] = {"save": {}, "restore": {}}
    for rep in range(repeats):
        order = METHODS[rep % len(METHODS) :] + METHODS[: rep % len(METHODS)]
        runs: dict[str, dict[str, list[float]]] = {"save": {}, "restore": {}}
        paths = {}
        for method in order + order[::-1]:
            paths[method] = path = _clear_target(method, workdir)
            os.sync()  # nothing of an earlier save is left to write back in this one
            seconds = _timed(lambda m=method, p=path: SAVERS[m](state, p))
            runs["save"].setdefault(method, []).append(seconds)
        for method in order + order[::-1]:
            if cold:
                drop_page_cache()
            for tensor in target.values():
                tensor.zero_()
            seconds = _timed(lambda m=method, p=paths[method]: RESTORERS[m](target, p))
            runs["restore"].setdefault(method, []).append(seconds)
            assert all(torch.equal(target[k], state[k]) for k in state), method
        for operation, per_method in runs.items():
            for method, seconds in per_method.items():
                times[operation].setdefault(method, []).append(statistics.mean(seconds))
        print(f"  repeat {rep + 1}/{repeats} done", file=sys.stderr, flush=True)
    return times


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_child(method: str, size_mib: int, tensor_mib: int, workdir: str) -> None:
    """Child mode: build the state, reset the peak RSS, save once, print the extra peak."""
    state = make_state(size_mib, tensor_mib)
    path = _clear_target(method, Path(workdir))
    if method == OURS:  # import outside the measured window, as a training job would have
        import trainhooks._saver  # noqa: F401
    elif method == SAFETENSORS:
        import safetensors.torch  # noqa: F401
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    SAVERS[method](state, path)
    peak = _status_kib("VmHWM")
    print(json.dumps({"extra_kib": peak - before, "rss_kib": before}))


def measure_rss(size_mib: int, tensor_mib: int, workdir: Path) -> dict[str, float]:
    """Extra peak RSS (MiB) of one save per method, each in a fresh process."""
    extra = {}
    for method in METHODS:
        result = subprocess.run(
            [sys.executable, __file__, "--rss-child", method, "--size-mib", str(size_mib),
             "--tensor-mib", str(tensor_mib), "--dir", os.fspath(workdir)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        extra[method] = json.loads(result.stdout)["extra_kib"] / 1024
        _clear_target(method, workdir)
    return extra


def _mbps(nbytes: int, seconds: list[float]) -> float:
    return nbytes / 1e6 / statistics.median(seconds)


def _paired_ratio(times: dict[str, list[float]], method: str) -> float:
    """Median over rounds of raw time / method time, each round measured back to back."""
    return statistics.median(r / m for r, m in zip(times[RAW], times[method], strict=True))


_LABELS = {
    ("save", RAW): "raw os.write + fsync",
    ("save", OURS): "trainhooks Saver.save (durable commit)",
    ("save", TORCH): "torch.save + fsync",
    ("save", SAFETENSORS): "safetensors save_file + fsync",
    ("restore", RAW): "raw readinto preallocated",
    ("restore", OURS): "trainhooks Saver.restore (crc32c verified, in place)",
    ("restore", TORCH): "torch.load + copy_ into target",
    ("restore", SAFETENSORS): "safetensors load_file + copy_ into target",
}


def report(
    times: dict[str, dict[str, list[float]]],
    rss: dict[str, float],
    nbytes: int,
    cold: bool,
) -> str:
    """The result table (Markdown, readable as plain text too)."""
    lines = [
        "| operation | method | MB/s median | MB/s best | x raw (medians) | x raw (paired) "
        "| x raw (bests) | seconds per repeat (mean of its 2 runs) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for operation in ("save", "restore"):
        raw = _mbps(nbytes, times[operation][RAW])
        raw_best = nbytes / 1e6 / min(times[operation][RAW])
        for method in METHODS:
            runs = times[operation][method]
            rate, best = _mbps(nbytes, runs), nbytes / 1e6 / min(runs)
            paired = _paired_ratio(times[operation], method)
            each = ", ".join(f"{s:.2f}" for s in runs)
            lines.append(
                f"| {operation} | {_LABELS[operation, method]} | {rate:.0f} | {best:.0f} "
                f"| {rate / raw:.2f} | {paired:.2f} | {best / raw_best:.2f} | {each} |"
            )
    budget = 64 + 0.05 * nbytes / 2**20
    lines.append("")
    for operation, target in (("save", TARGET_SAVE), ("restore", TARGET_RESTORE)):
        ratio = _mbps(nbytes, times[operation][OURS]) / _mbps(nbytes, times[operation][RAW])
        paired = _paired_ratio(times[operation], OURS)
        bests = min(times[operation][RAW]) / min(times[operation][OURS])
        verdict = "MET" if bests >= target else "MISSED"
        lines.append(
            f"{operation}: trainhooks {bests:.2f}x raw (best of each), {ratio:.2f}x (medians), "
            f"{paired:.2f}x (paired medians); target >= {target}x on the bests: {verdict}"
        )
    lines += [
        "restores ran with a "
        + ("cold page cache (dropped before each)" if cold else "WARM page cache (not root)"),
        "",
        "| method | extra peak RSS during one save (MiB) |",
        "|---|---:|",
    ]
    lines += [f"| {_LABELS['save', method]} | {rss[method]:.1f} |" for method in METHODS]
    verdict = "MET" if rss[OURS] <= budget else "MISSED" if rss[OURS] > budget else "not run"
    lines.append(
        f"\ntrainhooks extra peak RSS {rss[OURS]:.1f} MiB; budget 64 MiB + 5 % of the state = "
        f"{budget:.1f} MiB: {verdict}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="state size (default 1024)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--tensor-mib", type=int, default=64, help="size of each tensor")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS children")
    parser.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child, args.size_mib, args.tensor_mib, args.dir)
        return
    workdir = Path(tempfile.mkdtemp(prefix="trainhooks-bench-", dir=args.dir))
    try:
        state = make_state(args.size_mib, args.tensor_mib)
        nbytes = sum(t.numel() * t.element_size() for t in state.values())
        cold = drop_page_cache()
        print(
            f"{nbytes / 2**20:.0f} MiB float32 in {len(state)} tensors, {args.repeats} "
            f"interleaved repeats, in {workdir}\npython {platform.python_version()}, torch "
            f"{torch.__version__}, {os.cpu_count()} CPUs, kernel {platform.release()}",
            flush=True,
        )
        times = run_timings(state, workdir, args.repeats, cold)
        del state
        rss = {m: float("nan") for m in METHODS}
        if not args.no_rss:
            rss = measure_rss(args.size_mib, args.tensor_mib, workdir)
        print(report(times, rss, nbytes, cold))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
