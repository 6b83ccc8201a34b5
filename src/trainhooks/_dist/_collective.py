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

__all__ = ["Timeout", "checkpoint_group", "collective_error", "seconds"]

Timeout = float | datetime.timedelta | None

# (the default group these were made under, {seconds: group}); a new default group (after
# destroy_process_group and a new init) empties it.
_groups: tuple[Any, dict[float, Any]] = (None, {})


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
    global _groups
    limit = seconds(timeout)
    if limit is None or not dist.is_initialized():
        return None
    world, cache = _groups
    if world is not dist.group.WORLD:
        world, cache = dist.group.WORLD, {}
        _groups = (world, cache)
    if limit not in cache:
        cache[limit] = dist.new_group(
            backend="gloo", timeout=datetime.timedelta(seconds=limit), group_desc="trainhooks"
        )
    return cache[limit]


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
