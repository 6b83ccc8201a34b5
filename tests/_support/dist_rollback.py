"""Rollbacks and recoverable errors in a distributed session, run by each rank (``mp.spawn``).

One launch runs every scenario (``tests/dist/test_session_rollback.py``); each writes what
the rank saw to ``<root>/results/<scenario>-<rank>.json``. The references are plain DDP
loops without a session that leave the skipped steps out: a rolled-back run must end
bit-identical to them, on every rank.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from _support import dist_workers as w
from _support.dist_session import digest, save, train_step
from trainhooks import (
    DistributedRecoveryError,
    MonitoredTrainingSession,
    NanTensorHook,
    RollbackRequested,
    SessionRunHook,
)

_LAST = 12  # every run trains to this step; saves every 4 steps, so sync points at 4, 8, 12


class RollBackOnce(SessionRunHook):
    """Asks, once, to undo ``bad_step``: back to ``to_step``'s checkpoint, skipping it."""

    def __init__(self, bad_step: int, to_step: int) -> None:
        self.bad_step, self.to_step, self.done = bad_step, to_step, False

    def after_run(self, run_context: Any, run_values: Any) -> None:
        if run_context.session.global_step == self.bad_step and not self.done:
            self.done = True
            raise RollbackRequested(self.to_step, (self.bad_step,), "test rollback")


class FailOnce(SessionRunHook):
    """Raises ``ConnectionError`` once, from ``after_run`` at ``step``."""

    def __init__(self, step: int) -> None:
        self.step, self.done = step, False

    def after_run(self, run_context: Any, run_values: Any) -> None:
        if run_context.session.global_step == self.step and not self.done:
            self.done = True
            raise ConnectionError(f"lost the data server at step {self.step}")


class Creations(SessionRunHook):
    """Records the global step of every ``after_create_session`` (restores included)."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def after_create_session(self, session: Any, coord: Any) -> None:
        self.steps.append(session.global_step)


def _model(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = DistributedDataParallel(w.make_model(seed=seed))
    return model, torch.optim.Adam(model.parameters(), lr=0.01)


def reference(rank: int, skipped: Iterable[int]) -> str:
    """The digest of a plain DDP loop to ``_LAST`` that leaves ``skipped`` out."""
    model, optim = _model(seed=10)
    for step in range(1, _LAST + 1):
        if step not in skipped:
            train_step(model, optim, step, rank)
    return digest(w.state(model, optim))


def session_run(
    directory: Path,
    rank: int,
    hooks: list[Any],
    nan_at: int | None = None,
    last: int = _LAST,
    **options: Any,
) -> dict[str, Any]:
    """A DDP + Adam session saving every 4 steps, trained to ``_LAST``; ``nan_at``: the
    loss of rank 1 at that step (first run only) is NaN, and so are the gradients."""
    model, optim = _model(seed=10)
    creations = Creations()
    runs: list[int] = []

    def step() -> Any:
        number = sess.global_step + 1  # read when run: a retried run trains the next step
        runs.append(number)
        if number == nan_at and rank == 1 and runs.count(number) == 1:
            for param in model.parameters():
                param.data.fill_(float("nan"))
        return train_step(model, optim, number, rank)

    with MonitoredTrainingSession(
        checkpoint_dir=directory,
        state={"model": model, "optim": optim},
        hooks=[*hooks, creations],
        save_checkpoint_steps=4,
        save_summaries_steps=None,
        log_step_count_steps=None,
        **options,
    ) as sess:
        while not sess.should_stop() and sess.global_step < last:
            sess.run(step)
    return {
        "step": sess.global_step,
        "digest": digest(w.state(model, optim)),
        "skipped": sorted(sess.skipped_steps),
        "creations": creations.steps,
        "runs": runs,
    }


def scenario_rollbacks(root: Path, rank: int) -> None:
    """Rank 1 alone asks: at a sync point (8, blocking saves); between sync points (9,
    background saves, back to 8 whose save may still be in flight); a NaN at 6."""
    at_sync = session_run(root / "at-sync", rank, [RollBackOnce(8, 4)] if rank == 1 else [])
    between = session_run(
        root / "between", rank, [RollBackOnce(9, 8)] if rank == 1 else [], async_save=True
    )
    nan = session_run(root / "nan", rank, [NanTensorHook("loss", rollback=True)], nan_at=6)
    references = {str(s): reference(rank, {s}) for s in (6, 8, 9)}
    closing: dict[str, Any] = {}
    try:  # rank 1 asks at 10, and the loop ends at 11, before the next sync point
        session_run(root / "closing", rank, [RollBackOnce(10, 8)] if rank == 1 else [], last=11)
    except DistributedRecoveryError as exc:
        closing = {"step": exc.step, "message": str(exc)}
    results = {"at_sync": at_sync, "between": between, "nan": nan, "closing": closing}
    save(root, "rollbacks", rank, results)
    save(root, "references", rank, references)


def scenario_recoverable(root: Path, rank: int) -> None:
    """A ConnectionError from rank 1's hook at the sync point of step 8: every rank
    recovers from step 8's checkpoint; one from the step function at step 3 (not a sync
    point) is a DistributedRecoveryError on the ranks raising it."""
    hooks: list[Any] = [FailOnce(8)] if rank == 1 else []
    options = {"recoverable_errors": (ConnectionError,)}
    recovered = session_run(root / "recovered", rank, hooks, **options)
    model, optim = _model(seed=10)
    error: dict[str, Any] = {}
    try:
        with MonitoredTrainingSession(
            checkpoint_dir=root / "unrecoverable",
            state={"model": model, "optim": optim},
            save_checkpoint_steps=4,
            save_summaries_steps=None,
            log_step_count_steps=None,
            recoverable_errors=(ConnectionError,),
        ) as sess:
            while sess.global_step < _LAST:
                if sess.global_step == 2:  # both ranks, before any collective of step 3
                    sess.run(_lose_connection)
                sess.run(train_step, model, optim, sess.global_step + 1, rank)
    except DistributedRecoveryError as exc:
        cause = type(exc.__cause__).__name__
        error = {"type": "DistributedRecoveryError", "rank": exc.rank, "step": exc.step}
        error |= {"cause": cause, "message": str(exc)}
    save(
        root,
        "recoverable",
        rank,
        {"recovered": recovered, "straight": reference(rank, ()), "error": error},
    )


def _lose_connection() -> None:
    raise ConnectionError("lost the data server")


def two_ranks(rank: int, world: int, port: int, root: str) -> None:
    """The one 2-rank launch of tests/dist/test_session_rollback.py."""
    w.init(rank, world, port)
    base = Path(root)
    scenario_rollbacks(base, rank)
    scenario_recoverable(base, rank)
    dist.barrier()
    dist.destroy_process_group()
