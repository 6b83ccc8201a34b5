"""The 2-rank jobs of ``tests/dist/test_kill.py``: a collective save killed (or stalled) at a
fault point, then a relaunch that resumes from the newest valid checkpoint.

Run as ``python -m _support.dist_kill_child PLAN.json``. This process is a zygote: it
imports torch and trainhooks once and forks every rank of every job in the plan (a launch
per fault point at once, so they share one torch import), each rank its own process with its
own gloo connections, as under torchrun. A rank never reports through the launcher: each
writes ``result-<rank>.json`` in its job's directory (what its save returned or raised) and
its exit status is recorded by the zygote in ``exits.json``; a rank stalled on purpose is
SIGKILLed once the other rank has written its result. The plan:

``{"phase": "crash", "jobs": [{"dir", "port", "point", "rank", "action", "timeout"}]}``
(a job with ``"load": true`` stalls a load instead of a save)
``{"phase": "resume", "port", "dirs": [...]}``
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

import trainhooks
from _support import dist_workers as w
from trainhooks.distributed import load_sharded, save_sharded

WORLD = 2
GUARD_SECONDS = 240.0  # a hung job fails the test instead of hanging it; never a figure


def _init(rank: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )


def _write(path: Path, payload: dict[str, Any]) -> None:
    temp = path.with_suffix(".part")
    temp.write_text(json.dumps(payload))
    os.replace(temp, path)


def crash_rank(rank: int, job: dict[str, Any]) -> None:
    """Step 1 commits; rank ``job["rank"]`` dies (or stalls) at ``job["point"]`` in the save
    of step 2; the survivor records what ``save_sharded`` raised."""
    from trainhooks._store import _faults

    directory = Path(job["dir"])
    _init(rank, job["port"])
    model = w.fsdp_model(WORLD)
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    if job.get("load"):
        _stalled_load(rank, job, model, optim)
        return
    for step in (1, 2):
        w.train(model, optim, 1, seed=step)
        expected = w.flat_arrays(w.full(w.state(model, optim)))  # a collective: every rank
        if rank == 0:
            np.savez(directory / f"expected-{step}.npz", **expected)
        if step == 2 and rank == job["rank"]:
            _faults.configure(f"{job['point']}={job['action']}")
        try:
            # Step 1 under the process group's own timeout: a rank slowed down by a busy
            # machine must not time out a save that is meant to succeed.
            timeout = job["timeout"] if step == 2 else None
            info = save_sharded(w.state(model, optim), directory, step, timeout=timeout)
            outcome: dict[str, Any] = {"returned": info.step}
        except trainhooks.CheckpointError as exc:
            outcome = _describe(exc)
        if step == 2 and job["action"] == "eio":  # every rank saw the error: retry
            _faults.configure(None)
            outcome["retried"] = save_sharded(w.state(model, optim), directory, 2).step
        if step == 2:
            _write(directory / f"result-{rank}.json", outcome)
        elif "returned" not in outcome:
            raise AssertionError(f"the save of step 1 failed: {outcome}")


def _stalled_load(rank: int, job: dict[str, Any], model: Any, optim: Any) -> None:
    """A committed save, then a load in which rank ``job["rank"]`` stalls at ``job["point"]``."""
    from trainhooks._store import _faults

    directory = Path(job["dir"])
    w.train(model, optim, 1)
    info = save_sharded(w.state(model, optim), directory, 1)
    if rank == job["rank"]:
        _faults.configure(f"{job['point']}={job['action']}")
    try:
        load_sharded(w.state(model, optim), info.path, timeout=job["timeout"])
        outcome: dict[str, Any] = {"returned": True}
    except trainhooks.CheckpointError as exc:
        outcome = _describe(exc)
    _write(directory / f"result-{rank}.json", outcome)


def _describe(exc: trainhooks.CheckpointError) -> dict[str, Any]:
    return {
        "error": type(exc).__name__,
        "message": str(exc),
        "rank": getattr(exc, "rank", None),
        "collective": getattr(exc, "collective", None),
        "committed": getattr(exc, "committed", None),
        "step": exc.step,
        "path": exc.path,
    }


def resume_rank(rank: int, plan: dict[str, Any]) -> None:
    """Every crashed directory: load its newest valid checkpoint onto fresh ranks, check it
    bit-exact against what was saved, train on, save step 3 (cleaning the leftovers)."""
    _init(rank, plan["port"])
    for name in plan["dirs"]:
        directory = Path(name)
        newest = trainhooks.latest_checkpoint(directory)
        assert newest is not None, f"{directory}: no checkpoint"
        model = w.fsdp_model(WORLD, seed=99)
        optim = torch.optim.Adam(model.parameters(), lr=0.01)
        w.train(model, optim, 1, seed=5)
        target = w.state(model, optim)
        load_sharded(target, newest.path, timeout=120)
        expected = dict(np.load(directory / f"expected-{newest.step}.npz"))
        w.assert_same(w.flat_arrays(w.full(target)), expected, f"{directory} at {newest.step}")
        w.train(model, optim, 1, seed=3)
        save_sharded(w.state(model, optim), directory, 3, timeout=120)
        if rank == 0:
            _write(directory / "resumed.json", {"from": newest.step})
    dist.barrier()
    dist.destroy_process_group()


def _fork(target: Any, *args: Any) -> int:
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            target(*args)
        except BaseException:
            traceback.print_exc()
            status = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)  # no atexit, no process-group teardown: a peer may be gone
    return pid


def _wait_all(ranks: dict[int, tuple[str, int]], stalled: dict[int, Path]) -> dict[str, Any]:
    """Wait for every forked rank; SIGKILL a stalled one once its peer wrote its result."""
    exits: dict[str, Any] = {}
    deadline = time.monotonic() + GUARD_SECONDS
    while ranks:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            name, rank = ranks.pop(pid)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            exits.setdefault(name, {})[str(rank)] = code
            continue
        for stalled_pid, peer_result in list(stalled.items()):
            if peer_result.exists() or time.monotonic() > deadline:
                os.kill(stalled_pid, signal.SIGKILL)
                del stalled[stalled_pid]
        if time.monotonic() > deadline:
            for pid in ranks:
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    return exits


def main(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    ranks: dict[int, tuple[str, int]] = {}
    stalled: dict[int, Path] = {}
    if plan["phase"] == "crash":
        for job in plan["jobs"]:
            Path(job["dir"]).mkdir(parents=True, exist_ok=True)
            for rank in range(WORLD):
                pid = _fork(crash_rank, rank, job)
                ranks[pid] = (job["dir"], rank)
                if job["action"] == "block" and rank == job["rank"]:
                    stalled[pid] = Path(job["dir"]) / f"result-{1 - rank}.json"
    else:
        for rank in range(WORLD):
            ranks[_fork(resume_rank, rank, plan)] = ("resume", rank)
    exits = _wait_all(ranks, stalled)
    _write(Path(plan_path).with_name(f"exits-{plan['phase']}.json"), exits)


if __name__ == "__main__":
    main(sys.argv[1])
