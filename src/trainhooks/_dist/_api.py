"""``save_sharded`` / ``load_sharded``: DCP's save and load through this project's store,
with DCP's wrapped failures turned back into this project's typed errors, the same on
every rank, and a peer lost mid-way (died or stalled past ``timeout``) turned into a
``CheckpointTimeoutError`` instead of a hang."""

from __future__ import annotations

import os
from typing import Any

import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from trainhooks._dist._collective import Timeout, checkpoint_group, collective_error
from trainhooks._dist._storage import ShardedReader, ShardedWriter
from trainhooks._exceptions import CheckpointError, CheckpointWriteError
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import DEFAULT_BASENAME

__all__ = ["load_sharded", "save_sharded", "save_with", "typed_error"]

# What a rank was waiting for when a collective failed, by how far its writer got.
_SAVE_COLLECTIVES = {
    "plan": "the exchange of save plans (before any shard was written)",
    "written": "the gathering of every rank's shard on the coordinator or the broadcast of "
    "the commit's outcome",
    "committed": "the broadcast of the commit's outcome",
    "info": "the broadcast of the committed checkpoint's facts",
}


def save_sharded(
    state: dict[str, Any],
    directory: str | os.PathLike[str],
    step: int,
    *,
    basename: str = DEFAULT_BASENAME,
    metadata: dict[str, Any] | None = None,
    max_to_keep: int | None = None,
    keep_checkpoint_every_n_hours: float = 10000.0,
    timeout: Timeout = None,
    storage_options: dict[str, Any] | None = None,
) -> CheckpointInfo:
    """Save ``state`` (a DCP state dict: DTensors, plain tensors, JSON-able values) from every
    rank as one committed checkpoint; every rank returns its ``CheckpointInfo``.

    ``max_to_keep`` / ``keep_checkpoint_every_n_hours`` apply ``Saver``'s retention (None
    keeps all), decided and carried out by rank 0 once the new checkpoint is durable.
    ``timeout`` (seconds or a ``timedelta``; the same on every rank) bounds each of the
    save's collectives; by default the process group's timeout applies. A peer that dies
    or stalls gives ``CheckpointTimeoutError`` on the other ranks. ``directory`` may be a
    URL (``s3://bucket/prefix``): every rank uploads its shard, rank 0 holds the prefix's
    lease and commits with the manifest's exclusive create; ``storage_options`` (rank
    0's, sent to every rank with the plan) go to fsspec, otherwise credentials and
    endpoint come from the environment."""
    writer = ShardedWriter(
        directory,
        step,
        basename=basename,
        metadata=metadata,
        max_to_keep=max_to_keep,
        keep_checkpoint_every_n_hours=keep_checkpoint_every_n_hours,
        storage_options=storage_options,
    )
    return save_with(writer, state, checkpoint_group(timeout), timeout)


def save_with(
    writer: ShardedWriter, state: dict[str, Any], group: Any, timeout: Timeout
) -> CheckpointInfo:
    """Run DCP's save of ``state`` through ``writer`` on ``group`` and broadcast the
    committed checkpoint's facts; any failure becomes the same typed error on every rank
    (the body of :func:`save_sharded`, also run on the background thread of
    :func:`save_sharded_async`)."""
    directory, step = writer.directory, writer.step
    try:
        dcp_save(state, storage_writer=writer, process_group=group)
        writer.stage = "info"
        info = _broadcast_info(writer.info, group)
    except CheckpointException as exc:
        writer.abandon()  # a rank failed before the commit: its staging goes now
        raise typed_error(exc, f"the save of step {step} in {directory}") from exc
    except RuntimeError as exc:  # from a collective: DCP wraps every other failure
        if not dist.is_initialized():
            raise
        writer.abandon()
        raise collective_error(
            exc,
            operation="save",
            collective=_SAVE_COLLECTIVES[writer.stage],
            path=directory,
            step=step,
            timeout=timeout,
            committed=_committed(writer),
        ) from exc
    finally:
        writer.release()
    if info is None:  # pragma: no cover - the coordinator always commits or raises
        raise CheckpointWriteError(f"the save of step {step} did not commit", step=step)
    return info


def _committed(writer: ShardedWriter) -> bool | None:
    """Whether the save committed, as far as this rank knows after a failed collective."""
    if writer.stage == "info":  # DCP's outcome reached this rank: committed
        return True
    if dist.get_rank() == 0:  # the coordinator commits, or not
        return writer.info is not None
    return None


def _broadcast_info(info: CheckpointInfo | None, group: Any) -> CheckpointInfo | None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        box = [info]
        dist.broadcast_object_list(box, src=0, group=group)
        info = box[0]
    return info


def load_sharded(
    state: dict[str, Any],
    path: str | os.PathLike[str],
    *,
    timeout: Timeout = None,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Load the checkpoint at ``path`` (a directory or a URL) into ``state`` in place on
    every rank, resharding to this job's world size and layout; every chunk is verified
    before use. ``timeout`` and ``storage_options`` as in :func:`save_sharded`."""
    reader = ShardedReader(path, storage_options=storage_options)
    group = checkpoint_group(timeout)
    try:
        dcp_load(state, storage_reader=reader, process_group=group)
    except CheckpointException as exc:
        raise typed_error(exc, f"the load of {path}") from exc
    except RuntimeError as exc:  # from a collective: DCP wraps every other failure
        if not dist.is_initialized():
            raise
        raise collective_error(
            exc,
            operation="load",
            collective=reader.collective,
            path=path,
            step=None,
            timeout=timeout,
            committed=None,
        ) from exc
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
