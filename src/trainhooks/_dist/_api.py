"""``save_sharded`` / ``load_sharded``: DCP's save and load through this project's store,
with DCP's wrapped failures turned back into this project's typed errors, the same on
every rank."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from trainhooks._dist._storage import ShardedReader, ShardedWriter
from trainhooks._exceptions import CheckpointError, CheckpointWriteError
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import DEFAULT_BASENAME

__all__ = ["load_sharded", "save_sharded", "typed_error"]


def save_sharded(
    state: dict[str, Any],
    directory: str | os.PathLike[str],
    step: int,
    *,
    basename: str = DEFAULT_BASENAME,
    metadata: dict[str, Any] | None = None,
) -> CheckpointInfo:
    """Save ``state`` (a DCP state dict: DTensors, plain tensors, JSON-able values) from every
    rank as one committed checkpoint; every rank returns its ``CheckpointInfo``."""
    writer = ShardedWriter(directory, step, basename=basename, metadata=metadata)
    try:
        dcp_save(state, storage_writer=writer)
    except CheckpointException as exc:
        raise typed_error(exc, f"the save of step {step} in {directory}") from exc
    finally:
        writer.release()
    info = writer.info
    if dist.is_initialized() and dist.get_world_size() > 1:
        box = [info]
        dist.broadcast_object_list(box, src=0)
        info = box[0]
    if info is None:  # pragma: no cover - the coordinator always commits or raises
        raise CheckpointWriteError(f"the save of step {step} did not commit", step=step)
    return info


def load_sharded(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Load the checkpoint at ``path`` into ``state`` in place on every rank, resharding to
    this job's world size and layout; every chunk is verified before use."""
    reader = ShardedReader(Path(path))
    try:
        dcp_load(state, storage_reader=reader)
    except CheckpointException as exc:
        raise typed_error(exc, f"the load of {path}") from exc
    finally:
        reader.close()


def typed_error(exc: CheckpointException, what: str) -> CheckpointError:
    """The first of this project's errors among a DCP failure's ranks (the same on every
    rank, since DCP gives every rank all failures), or a ``CheckpointError`` naming them."""
    for rank in sorted(exc.failures):
        failure = exc.failures[rank][0]
        if isinstance(failure, CheckpointError):
            return failure
    ranks = ", ".join(str(r) for r in sorted(exc.failures))
    first = exc.failures[min(exc.failures)][0] if exc.failures else exc
    return CheckpointError(f"{what} failed on rank(s) {ranks}: {first!r}")
