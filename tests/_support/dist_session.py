"""Scenarios run by each rank of the distributed session tests (``mp.spawn``, gloo on CPU).

One launch runs them all in turn (a launch costs seconds); each writes what it saw to
``<root>/results/<scenario>-<rank>.json`` for the tests to assert on, and raises on a
failed check inside the rank (``mp.spawn`` then fails the fixture with that traceback).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import trainhooks
from _support import dist_workers as w
from trainhooks import (
    CheckpointSaverHook,
    CheckpointSaverListener,
    MonitoredTrainingSession,
    SessionRunHook,
    StopAtStepHook,
)
from trainhooks.distributed import ModelOptimizerState


class Crash(Exception):
    """The simulated crash of a run (every rank raises it at the same step)."""


class StopAfterSave(CheckpointSaverListener):
    """A listener whose ``after_save`` asks to stop at ``step`` (rank 0 has the hook)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.saved: list[int] = []

    def after_save(self, session: Any, step: int) -> bool:
        self.saved.append(step)
        return step == self.step


def batch(step: int, rank: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(6, 8, generator=generator)


def train_step(model: nn.Module, optim: torch.optim.Optimizer, step: int, rank: int) -> Any:
    loss = model(batch(step, rank)).pow(2).mean()
    optim.zero_grad()
    loss.backward()
    optim.step()
    if rank == 1 and step == _SIGTERM_AT.get("step"):
        os.kill(os.getpid(), signal.SIGTERM)  # a preemption notice to this rank only
    return {"loss": float(loss.detach())}


_SIGTERM_AT: dict[str, int] = {}


def digest(value: Any) -> str:
    """A hash of every array of a state (DTensors gathered), in path order."""
    arrays = w.flat_arrays(w.full(value))
    sha = hashlib.sha256()
    for key in sorted(arrays):
        sha.update(key.encode())
        sha.update(np.ascontiguousarray(arrays[key]).tobytes())
    return sha.hexdigest()


def ddp_run(
    directory: Path | str,
    rank: int,
    until: int,
    crash_at: int | None = None,
    async_save: bool = False,
) -> dict[str, Any]:
    """A DDP model + Adam trained by a session saving every 4 steps (in the background
    with ``async_save``), up to ``until``."""
    model = DistributedDataParallel(w.make_model(seed=0))
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    state = {"model": model, "optim": optim, "data": {"epoch": 0}}
    restored = None
    with MonitoredTrainingSession(
        checkpoint_dir=directory,
        state=state,
        save_checkpoint_steps=4,
        save_summaries_steps=None,
        log_step_count_steps=None,
        async_save=async_save,
    ) as sess:
        restored = sess.global_step
        while not sess.should_stop() and sess.global_step < until:
            if sess.global_step == crash_at:
                raise Crash
            state["data"]["epoch"] = sess.global_step  # a plain value saved with the rest
            sess.run(train_step, model, optim, sess.global_step + 1, rank)
    return {
        "restored": restored,
        "step": sess.global_step,
        "digest": digest(w.state(model, optim)),
    }


def save(root: Path, name: str, rank: int, result: dict[str, Any]) -> None:
    out = root / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}-{rank}.json").write_text(json.dumps(result))


def scenario_resume(root: Path, rank: int) -> None:
    """Uninterrupted to 12 vs crashed at 7 and resumed from 4; then the newest
    checkpoint's shard corrupted: every rank falls back to the previous one."""
    straight = ddp_run(root / "straight", rank, 12)
    try:
        ddp_run(root / "resumed", rank, 12, crash_at=7)
        raise AssertionError("expected the crash")
    except Crash:
        pass
    resumed = ddp_run(root / "resumed", rank, 12)
    save(root, "resume", rank, {"straight": straight, "resumed": resumed})
    newest = root / "resumed" / "ckpt-000000000012"
    if rank == 0:
        shard = newest / "shard-00001-of-00002.safetensors"
        data = bytearray(shard.read_bytes())
        data[-5] ^= 0x40
        shard.write_bytes(bytes(data))
    dist.barrier()
    fallback = ddp_run(root / "resumed", rank, 12)
    save(root, "corrupt", rank, fallback)


def scenario_listener_stop(root: Path, rank: int) -> None:
    """A listener on rank 0 stops every rank at step 6; the hook keeps 2 checkpoints."""
    model = DistributedDataParallel(w.make_model(seed=1))
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    listener = StopAfterSave(6)
    hook = CheckpointSaverHook(root / "listener", save_steps=3, listeners=[listener], max_to_keep=2)
    with MonitoredTrainingSession(
        checkpoint_dir=root / "listener",
        state={"model": model, "optim": optim},
        chief_only_hooks=[hook],
        save_summaries_steps=None,
        log_step_count_steps=None,
    ) as sess:
        while not sess.should_stop() and sess.global_step < 30:
            sess.run(train_step, model, optim, sess.global_step + 1, rank)
    save(root, "listener", rank, {"step": sess.global_step, "saved": listener.saved})


def scenario_stop_on_one_rank(root: Path, rank: int) -> None:
    """StopAtStepHook(5) on rank 1 only: every rank stops at the next sync point, 8."""
    model = DistributedDataParallel(w.make_model(seed=2))
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    hooks = [StopAtStepHook(last_step=5)] if rank == 1 else []
    with MonitoredTrainingSession(
        checkpoint_dir=root / "stop",
        state={"model": model, "optim": optim},
        hooks=hooks,
        save_checkpoint_steps=100,
        save_summaries_steps=None,
        log_step_count_steps=None,
        sync_every_steps=4,
    ) as sess:
        while not sess.should_stop() and sess.global_step < 30:
            sess.run(train_step, model, optim, sess.global_step + 1, rank)
    save(root, "stop", rank, {"step": sess.global_step})


def scenario_fsdp(root: Path, rank: int, world: int) -> None:
    """FSDP2 + Adam through ModelOptimizerState: saved at 4, restored into a fresh model."""
    model = w.fsdp_model(world, seed=3)
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    state: dict[str, Any] = {"model_opt": ModelOptimizerState(model, optim), "extra": [1, 2]}
    options = {"save_checkpoint_steps": 2, "save_summaries_steps": None}
    with MonitoredTrainingSession(checkpoint_dir=root / "fsdp", state=state, **options) as sess:
        for _ in range(4):
            sess.run(train_step, model, optim, sess.global_step + 1, rank)
    expected = w.flat_arrays(w.full(w.state(model, optim)))
    if rank == 0:
        np.savez(root / "fsdp-expected.npz", **expected)
    fresh = w.fsdp_model(world, seed=4)
    fresh_optim = torch.optim.Adam(fresh.parameters(), lr=0.01)
    state = {"model_opt": ModelOptimizerState(fresh, fresh_optim), "extra": []}
    with MonitoredTrainingSession(checkpoint_dir=root / "fsdp", state=state, **options) as sess:
        restored = sess.global_step
    w.assert_same(w.flat_arrays(w.full(w.state(fresh, fresh_optim))), expected, "fsdp")
    save(root, "fsdp", rank, {"restored": restored, "extra": state["extra"]})


def scenario_sigterm(root: Path, rank: int) -> None:
    """SIGTERM to rank 1 during step 5: every rank saves and stops at step 8."""
    model = DistributedDataParallel(w.make_model(seed=5))
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    _SIGTERM_AT["step"] = 5
    code: Any = None
    sess = None
    try:
        with MonitoredTrainingSession(
            checkpoint_dir=root / "sigterm",
            state={"model": model, "optim": optim},
            save_checkpoint_steps=100,
            save_summaries_steps=None,
            log_step_count_steps=None,
            sync_every_steps=4,
        ) as sess:
            while not sess.should_stop() and sess.global_step < 30:
                sess.run(train_step, model, optim, sess.global_step + 1, rank)
    except SystemExit as exc:
        code = exc.code
    finally:
        _SIGTERM_AT.clear()
    assert sess is not None
    save(root, "sigterm", rank, {"step": sess.global_step, "code": code})


class StepClock:
    """A clock that reads the global step as seconds: time-based saves, deterministic."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def scenario_save_secs(root: Path, rank: int) -> None:
    """save_secs=3 with sync points every 4 steps: the saves land at 4 and 8, then the
    final one at 10."""
    model = DistributedDataParallel(w.make_model(seed=6))
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    clock = StepClock()
    hook = CheckpointSaverHook(root / "secs", save_secs=3, clock=clock)
    with MonitoredTrainingSession(
        checkpoint_dir=root / "secs",
        state={"model": model, "optim": optim},
        chief_only_hooks=[hook],
        save_summaries_steps=None,
        log_step_count_steps=None,
        sync_every_steps=4,
    ) as sess:
        while sess.global_step < 10:
            clock.now = float(sess.global_step + 1)
            sess.run(train_step, model, optim, sess.global_step + 1, rank)
    save(root, "secs", rank, {"step": sess.global_step})


def scenario_failed_save(root: Path, rank: int) -> None:
    """The commit of step 4 fails on rank 0 (EIO before its manifest): every rank raises
    the same typed error from that step; step 0's checkpoint stays the newest."""
    from trainhooks._store import _faults

    model = DistributedDataParallel(w.make_model(seed=7))
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    error: str | None = None
    sess = None
    try:
        with MonitoredTrainingSession(
            checkpoint_dir=root / "failed",
            state={"model": model, "optim": optim},
            save_checkpoint_steps=4,
            save_summaries_steps=None,
            log_step_count_steps=None,
        ) as sess:
            if rank == 0:
                _faults.configure("before_manifest=eio")
            while sess.global_step < 10:
                sess.run(train_step, model, optim, sess.global_step + 1, rank)
    except trainhooks.CheckpointError as exc:
        error = type(exc).__name__
    finally:
        _faults.configure(None)
    assert sess is not None
    save(root, "failed", rank, {"step": sess.global_step, "error": error})


class BrokenSchedule(SessionRunHook):
    """A saver hook of the chief's whose ``collective_save_due`` raises at creation."""

    collective_save_steps = None

    def collective_save_due(self, session: Any, phase: str, step: int) -> bool:
        raise ValueError(f"no schedule for the {phase} phase")


def scenario_chief_refuses(root: Path, rank: int) -> None:
    """A chief's hook failing at the creation's sync point: every rank raises its error
    instead of waiting for it."""
    error = message = None
    try:
        MonitoredTrainingSession(
            checkpoint_dir=root / "refused",
            state={"w": torch.zeros(2)},
            chief_only_hooks=[BrokenSchedule()],
            save_summaries_steps=None,
            log_step_count_steps=None,
        )
    except ValueError as exc:
        error, message = type(exc).__name__, str(exc)
    save(root, "refused", rank, {"error": error, "message": message})


def two_ranks(rank: int, world: int, port: int, root: str) -> None:
    """The one 2-rank launch of tests/dist/test_session.py."""
    w.init(rank, world, port)
    base = Path(root)
    scenario_resume(base, rank)
    scenario_listener_stop(base, rank)
    scenario_stop_on_one_rank(base, rank)
    scenario_fsdp(base, rank, world)
    scenario_save_secs(base, rank)
    scenario_failed_save(base, rank)
    scenario_chief_refuses(base, rank)
    scenario_sigterm(base, rank)
    dist.barrier()
    dist.destroy_process_group()


__all__ = ["trainhooks", "two_ranks"]
