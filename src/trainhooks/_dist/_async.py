"""``save_sharded_async``: a collective save whose caller waits only for the copy.

Every rank copies its local shards into CPU staging buffers on the calling (training)
thread, then one background thread per process runs the collective write, gather and
commit of :func:`save_sharded` on a process group of its own (the training thread may be
running collectives on the world group meanwhile). The staging buffers are reused from one
save to the next (DCP's ``StateDictStager`` keeps them by source storage), so a second call
first waits for the save in flight: at most one per process, as ``Saver``'s
``max_pending=1``. The returned ``SaveFuture`` resolves on every rank with the same
``CheckpointInfo`` or the same typed error.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions
from torch.distributed.checkpoint.stateful import Stateful

from trainhooks._dist._api import save_with
from trainhooks._dist._collective import Timeout, background_group
from trainhooks._dist._storage import ShardedWriter
from trainhooks._state._staging import StagingBuffers
from trainhooks._store._background import SaveFuture
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import DEFAULT_BASENAME

__all__ = ["in_background", "save_sharded_async", "wait_for_sharded_saves"]


class _Background:
    """This process's background collective saves: one worker thread, one stager (its
    reused CPU buffers), the save in flight."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="trainhooks-sharded-save")
        self.stager = DefaultStager(StagingOptions(False, False, False, False))
        self.buffers = StagingBuffers()  # the copies a caller makes itself (``copied``)
        self.pending: SaveFuture | None = None


_lock = threading.Lock()
_background: _Background | None = None


def _get() -> _Background:
    global _background
    with _lock:
        if _background is None:
            _background = _Background()
        return _background


def save_sharded_async(
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
) -> SaveFuture:
    """Like :func:`save_sharded`, but return once this rank's shards are copied to CPU
    memory: the write, gather and commit go on in the background, and ``state`` may change
    as soon as this returns. Call it on every rank with the same arguments.

    ``result()`` of the returned future gives every rank the same ``CheckpointInfo`` or
    raises the same typed error (``CheckpointTimeoutError`` for a lost peer, bounded by
    ``timeout``). A save still in flight from an earlier call is waited for first (its
    outcome stays with its own future); :func:`wait_for_sharded_saves` waits for the last."""
    writer = ShardedWriter(  # step, basename and retention are checked here, not in the background
        directory,
        step,
        basename=basename,
        metadata=metadata,
        max_to_keep=max_to_keep,
        keep_checkpoint_every_n_hours=keep_checkpoint_every_n_hours,
        storage_options=storage_options,
    )
    group = background_group(timeout)
    return in_background(
        state, lambda snapshot: save_with(writer, snapshot, group, timeout), writer.step, directory
    )


def in_background(
    state: dict[str, Any],
    job: Callable[[dict[str, Any]], CheckpointInfo],
    step: int,
    directory: str | os.PathLike[str],
    copied: Callable[[StagingBuffers], dict[str, Any]] | None = None,
) -> SaveFuture:
    """Copy ``state`` (top-level ``Stateful`` values through their ``state_dict()``) into
    this process's staging buffers once the save in flight is done, then run ``job`` on the
    copy on the background thread; the future gets its outcome. Call on the training
    thread, after creating the job's process group (a collective) on every rank.

    ``copied``, if given, makes more entries of the copy itself, into this process's
    reused ``StagingBuffers`` (the state layer's staging: its buffers are kept by name,
    where DCP's stager keeps them by source storage, which a tensor made over an array's
    bytes never repeats); they are not copied again. A failing copy raises here and starts
    nothing."""
    background = _get()
    if background.pending is not None:
        wait([background.pending])  # its buffers are about to be overwritten
    flat = {k: v.state_dict() if isinstance(v, Stateful) else v for k, v in state.items()}
    snapshot = background.stager.stage(flat)  # synchronous: no async staging configured
    assert isinstance(snapshot, dict)
    if copied is not None:
        snapshot.update(copied(background.buffers))
    future = SaveFuture(step, directory)

    def run() -> None:
        if not future.set_running_or_notify_cancel():  # pragma: no cover - never cancelled
            return
        try:
            future.set_result(job(snapshot))
        except BaseException as exc:
            future.set_exception(exc)

    background.pending = future
    background.executor.submit(run)
    return future


def wait_for_sharded_saves() -> None:
    """Wait until this process's background collective save, if any, has finished (its
    outcome stays with its future). Every rank should call it before ending the job."""
    background = _background
    if background is not None and background.pending is not None:
        wait([background.pending])
