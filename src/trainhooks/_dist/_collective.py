"""The process group a collective save or load runs on, and its failures as typed errors.

A rank that dies mid-save closes its connections and gloo raises at once on the others; a
rank that stalls leaves them waiting for the group's timeout (30 minutes by default for
gloo). A caller wanting a shorter bound passes ``timeout``: the save then runs on a gloo
group with that timeout, created once per process and timeout (creating a group is itself
a collective, so every rank must pass the same value). Whatever the collectives raise (gloo
raises ``RuntimeError`` for a closed connection and a timeout alike; DCP wraps only the
errors of the storage and planner code, never those of its own collectives) becomes one
:class:`CheckpointTimeoutError` naming the rank, the exchange it was in, step and path.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch.distributed as dist

from trainhooks._exceptions import CheckpointTimeoutError

__all__ = ["Timeout", "background_group", "checkpoint_group", "collective_error", "seconds"]

Timeout = float | datetime.timedelta | None

# (the default group these were made under, {(use, seconds): group}); a new default group (after
# destroy_process_group and a new init) empties it.
_groups: tuple[Any, dict[tuple[str, float], Any]] = (None, {})


def seconds(timeout: Timeout) -> float | None:
    """``timeout`` in seconds (None: the process group's own), refusing values <= 0."""
    if timeout is None:
        return None
    value = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else timeout
    value = float(value)
    if not value > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return value


def checkpoint_group(timeout: Timeout) -> Any:
    """The group a collective checkpoint operation uses: None (DCP's default, the world
    group with its timeout) without ``timeout``, else a gloo group of every rank whose
    collectives give up after ``timeout``. Call it on every rank, with the same value."""
    limit = seconds(timeout)
    if limit is None or not dist.is_initialized():
        return None
    return _group("foreground", limit)


def background_group(timeout: Timeout) -> Any:
    """The gloo group of every rank a background (asynchronous) save runs its collectives
    on: never the world group, whose collectives the training thread may be running at the
    same moment. Without ``timeout`` it has gloo's default timeout (30 minutes). Call it on
    every rank's training thread, with the same value."""
    if not dist.is_initialized():
        return None
    limit = seconds(timeout)
    return _group("background", 0.0 if limit is None else limit)


def _group(use: str, limit: float) -> Any:
    """The gloo group for ``use`` whose collectives give up after ``limit`` seconds (0:
    gloo's default timeout), made once per process, world group, use and limit (a
    background save never shares a group with a save or load on the training thread)."""
    global _groups
    world, cache = _groups
    if world is not dist.group.WORLD:
        world, cache = dist.group.WORLD, {}
        _groups = (world, cache)
    key = (use, limit)
    if key not in cache:
        cache[key] = dist.new_group(
            backend="gloo",
            timeout=datetime.timedelta(seconds=limit) if limit else None,
            group_desc="trainhooks",
        )
    return cache[key]


def collective_error(
    exc: BaseException,
    *,
    operation: str,
    collective: str,
    path: str | os.PathLike[str],
    step: int | None,
    timeout: Timeout,
    committed: bool | None,
) -> CheckpointTimeoutError:
    """The typed error for a collective of ``operation`` (``"save"``/``"load"``) that failed
    on this rank while it was in ``collective`` (a short description of the exchange)."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    limit = seconds(timeout)
    bound = f"{limit:g} s" if limit is not None else "the process group's timeout"
    what = f"the {operation} of step {step}" if step is not None else f"the {operation}"
    if committed is True:
        outcome = "the checkpoint is committed"
    elif committed is False:
        outcome = "nothing was committed; the previous checkpoint is still the newest"
    else:
        outcome = "whether the checkpoint was committed is unknown on this rank"
    return CheckpointTimeoutError(
        f"{what} in {os.fspath(path)} failed on rank {rank}: a peer rank died or did not reach "
        f"{collective} within {bound} ({exc}); {outcome}. The process group is unusable: "
        "end the job and relaunch it (it resumes from the newest valid checkpoint)",
        path=path,
        step=step,
        rank=rank,
        collective=collective,
        timeout=limit,
        committed=committed,
    )
