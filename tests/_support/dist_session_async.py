"""Scenarios of ``MonitoredTrainingSession(async_save=True)`` run by each rank of
``tests/dist/test_session_async.py`` (one 2-rank ``mp.spawn`` launch, gloo on CPU).

Each writes what the rank saw to ``<root>/results/<scenario>-<rank>.json``; rank 0 writes
the state expected in a checkpoint to ``.npz`` files for the test process to compare.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import trainhooks
from _support import dist_workers as w
from _support.dist_session import digest, save, train_step
from trainhooks import CheckpointSaverHook, CheckpointSaverListener, MonitoredTrainingSession
from trainhooks._store import _faults
from trainhooks.distributed import ModelOptimizerState, wait_for_sharded_saves


class Recorder(CheckpointSaverListener):
    """Records ``(event, step, global step)`` on rank 0; its ``after_save`` asks to stop at
    ``stop_at``, and may raise in ``before_save`` of ``fail_at`` or set a fault after
    ``after_save`` of ``fault_after``."""

    def __init__(
        self,
        stop_at: int | None = None,
        fail_at: int | None = None,
        fault_after: tuple[int, str] | None = None,
        move_after: tuple[int, Path] | None = None,
    ) -> None:
        self.events: list[list[Any]] = []
        self.stop_at = stop_at
        self.fail_at = fail_at
        self.fault_after = fault_after
        self.move_after = move_after  # (step, directory): moved aside after that save

    def before_save(self, session: Any, step: int) -> None:
        self.events.append(["before", step, session.global_step])
        if step == self.fail_at:
            raise ValueError(f"the listener refuses the save of step {step}")

    def after_save(self, session: Any, step: int) -> bool:
        self.events.append(["after", step, session.global_step])
        if self.fault_after is not None and step == self.fault_after[0]:
            _faults.configure(self.fault_after[1])
        if self.move_after is not None and step == self.move_after[0]:
            directory = self.move_after[1]  # the chief's saver then refuses its next commit
            directory.rename(moved(directory))
        return step == self.stop_at


def moved(directory: Path) -> Path:
    return directory.with_name(directory.name + "-moved")


def session(
    directory: Path,
    model: nn.Module,
    optim: Any,
    listener: Recorder,
    async_save: bool = True,
    extra: dict[str, Any] | None = None,
    max_to_keep: int = 5,
) -> Any:
    """The session under test: rank 0's default saver hook saves every 3 steps (in the
    background unless ``async_save`` is False); every step is a sync point, so deliveries
    come as soon as possible."""
    hook = CheckpointSaverHook(
        directory,
        save_steps=3,
        listeners=[listener],
        async_save=async_save,
        max_to_keep=max_to_keep,
    )
    state = {"model": model, "optim": optim}
    return MonitoredTrainingSession(
        checkpoint_dir=directory,
        state=state if extra is None else {**state, "extra": extra},
        chief_only_hooks=[hook],
        save_summaries_steps=None,
        log_step_count_steps=None,
        sync_every_steps=1,
    )


def flat_state(model: nn.Module, optim: Any) -> dict[str, np.ndarray]:
    """The arrays of the state as ``trainhooks.load`` returns a session checkpoint."""
    return w.flat_arrays(w.full({"model": model.state_dict(), "optim": optim.state_dict()}))


def steps(directory: Path) -> list[int]:
    return [info.step for info in trainhooks.list_checkpoints(directory)]


def scenario_train(root: Path, rank: int) -> None:
    """Train to 3 (the close waits for the save of 3), relaunch from it bit-exact, hold the
    save of 6 while the parameters change in place (then let it finish on both ranks before
    step 7), stop on a listener after the save of 9."""
    directory = root / "train"
    model = DistributedDataParallel(w.make_model(seed=10))
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    first = Recorder()
    with session(directory, model, optim, first) as sess:
        while sess.global_step < 3:
            sess.run(train_step, model, optim, sess.global_step + 1, rank)
    at_close = steps(directory)  # right after the close, on every rank
    before = digest(w.state(model, optim))
    model = DistributedDataParallel(w.make_model(seed=11))  # a relaunch: fresh objects
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    second = Recorder(stop_at=9)
    with session(directory, model, optim, second) as sess:
        restored, restored_digest = sess.global_step, digest(w.state(model, optim))
        while not sess.should_stop() and sess.global_step < 30:
            if sess.global_step == 5:  # no save in flight: the next shard write is step 6's
                _faults.configure("before_shard_write=block")
            sess.run(train_step, model, optim, sess.global_step + 1, rank)
            if sess.global_step == 6:
                if rank == 0:
                    np.savez(root / "expected-6.npz", **flat_state(model, optim))
                assert _faults.wait_blocked("before_shard_write")  # its write not begun
                with torch.no_grad():
                    for parameter in model.parameters():
                        parameter.add_(1.0)
                _faults.configure(None)  # lets the write go on
                wait_for_sharded_saves()  # finished on both ranks: delivered at step 7
    save(
        root,
        "train",
        rank,
        {
            "at_close": at_close,
            "restored": restored,
            "bit_exact": restored_digest == before,
            "events": [first.events, second.events],
            "step": sess.global_step,
            "after_close": steps(directory),
        },
    )


def failing_run(
    root: Path,
    rank: int,
    name: str,
    listener: Recorder,
    async_save: bool = True,
    bad_copy_on: int | None = None,
    max_to_keep: int = 5,
    until: int = 12,
) -> None:
    """Train until a save fails; record where and how on this rank. With ``bad_copy_on``,
    that rank's state gets a value it cannot copy (a sparse tensor) before step 3."""
    directory = root / name
    model = DistributedDataParallel(w.make_model(seed=12))
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    extra: dict[str, Any] = {"t": torch.zeros(2)}
    outcome: dict[str, Any] = {"error": None}
    sess = None
    try:
        with session(directory, model, optim, listener, async_save, extra, max_to_keep) as sess:
            while sess.global_step < until:
                if sess.global_step == 2 and rank == bad_copy_on:
                    extra["t"] = torch.zeros(2).to_sparse()
                sess.run(train_step, model, optim, sess.global_step + 1, rank)
    except Exception as exc:
        outcome = {"error": type(exc).__name__, "message": str(exc)}
    finally:
        _faults.configure(None)
    assert sess is not None
    if listener.move_after is not None:
        directory = moved(directory)
    outcome.update(step=sess.global_step, events=listener.events, steps=steps(directory))
    save(root, name, rank, outcome)


def scenario_fsdp(root: Path, rank: int, world: int) -> None:
    """FSDP2 + Adam (ModelOptimizerState) saved in the background at 2 and 4 (the close
    waits for 4), then restored into a fresh sharded model on both ranks."""
    model = w.fsdp_model(world, seed=13)
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    hook = CheckpointSaverHook(root / "fsdp", save_steps=2, async_save=True)
    options: dict[str, Any] = {
        "checkpoint_dir": root / "fsdp",
        "chief_only_hooks": [hook],
        "save_summaries_steps": None,
        "log_step_count_steps": None,
    }
    state = {"model_opt": ModelOptimizerState(model, optim)}
    with MonitoredTrainingSession(state=state, **options) as sess:
        for _ in range(4):
            sess.run(train_step, model, optim, sess.global_step + 1, rank)
    expected = w.flat_arrays(w.full(w.state(model, optim)))
    fresh = w.fsdp_model(world, seed=14)
    fresh_optim = torch.optim.Adam(fresh.parameters(), lr=0.01)
    state = {"model_opt": ModelOptimizerState(fresh, fresh_optim)}
    options["chief_only_hooks"] = []
    with MonitoredTrainingSession(state=state, **options) as sess:
        restored = sess.global_step
    w.assert_same(w.flat_arrays(w.full(w.state(fresh, fresh_optim))), expected, "fsdp")
    save(root, "fsdp", rank, {"restored": restored, "steps": steps(root / "fsdp")})


def two_ranks(rank: int, world: int, port: int, root: str) -> None:
    """The one 2-rank launch of tests/dist/test_session_async.py."""
    w.init(rank, world, port)
    base = Path(root)
    scenario_train(base, rank)
    scenario_fsdp(base, rank, world)
    # the commit of step 3 fails on rank 0 (set once the save of 0 is delivered everywhere)
    failing_run(base, rank, "eio", Recorder(fault_after=(0, "before_manifest=eio")))
    failing_run(base, rank, "listener", Recorder(fail_at=3))
    for async_save, kind in ((True, "async"), (False, "blocking")):
        # the chief's saver refuses the commit of 3 before DCP's save: its directory moved
        move = Recorder(move_after=(0, base / f"moved-{kind}"))
        failing_run(base, rank, f"moved-{kind}", move, async_save)
        # rank 1 cannot copy its state for the save of 3 (a sparse tensor)
        failing_run(base, rank, f"copy-{kind}", Recorder(), async_save, bad_copy_on=1)
        # the chief's retention cannot delete the checkpoint of 0 once 3 is committed
        fault = Recorder(fault_after=(0, "retention_before_remove=eio"))
        failing_run(base, rank, f"retention-{kind}", fault, async_save, max_to_keep=1)
    failing_run(base, rank, "listener-blocking", Recorder(fail_at=3), async_save=False)
    # the final save of the close (at 4), which the other rank waits in, refused by a listener
    failing_run(base, rank, "listener-end", Recorder(fail_at=4), until=4)
    dist.barrier()
    dist.destroy_process_group()


__all__ = ["two_ranks"]
