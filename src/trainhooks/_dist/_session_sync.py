"""The collectives a ``MonitoredSession`` needs under ``torch.distributed``.

Kept to the few the session's protocol uses (``_session/_collective.py`` says when):
one small all-reduce of integer flags at sync points, a broadcast of the chief's schedule,
one collective save (DCP through ``ShardedWriter``, one committed checkpoint, the same
outcome on every rank), and a restore that falls back to the same older checkpoint on every
rank when any rank finds the newest one unusable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, cast

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from trainhooks._dist._api import typed_error
from trainhooks._dist._async import in_background
from trainhooks._dist._collective import background_group
from trainhooks._dist._refusal import refuse, refused_error
from trainhooks._dist._state_dict import (
    is_dcp_checkpoint,
    restore_sharded,
    staged_replicated,
    to_dcp_state,
)
from trainhooks._dist._storage import ShardedWriter
from trainhooks._exceptions import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointFormatError,
    CheckpointNotFoundError,
    CheckpointWriteError,
    portable_error,
)
from trainhooks._store._background import SaveFuture
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import committed_name, committed_path
from trainhooks._store._listing import commits_newest_first
from trainhooks._store._remote._api import committed_names
from trainhooks._store._remote._url import ObjectPath, checkpoint_location

__all__ = ["Collectives", "RestorePlain"]


_LOG = logging.getLogger("trainhooks")

Commit = Callable[[dict[str, Any] | None], CheckpointInfo]
CommitWith = Callable[[Commit], CheckpointInfo]
RestorePlain = Callable[[MutableMapping[str, Any], Path | ObjectPath], CheckpointInfo]

# Restore outcomes, combined with a max over the ranks.
_OK, _UNUSABLE, _FAILED = 0, 1, 2


class Collectives:
    """The default process group, seen as the session needs it."""

    def __init__(self) -> None:
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        backend = dist.get_backend()
        self._device = (
            torch.device("cuda", torch.cuda.current_device())
            if backend == "nccl"
            else torch.device("cpu")
        )

    def max_ints(self, values: list[int]) -> list[int]:
        """The element-wise maximum of ``values`` over all ranks (one small all-reduce)."""
        tensor = torch.tensor(values, dtype=torch.int64, device=self._device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return [int(v) for v in tensor.tolist()]

    def broadcast_ints(self, values: list[int]) -> list[int]:
        """Rank 0's ``values`` on every rank (the same length on every rank)."""
        tensor = torch.tensor(values, dtype=torch.int64, device=self._device)
        dist.broadcast(tensor, src=0)
        return [int(v) for v in tensor.tolist()]

    def gather_objects(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (sent pickled, in memory only), by rank."""
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def prepare_background(self) -> None:
        """Create the process group of background saves now (a collective, so every rank
        calls it at the same point): a rank starting a save must not wait for the others."""
        background_group(None)

    def save(
        self,
        state: MutableMapping[str, Any],
        directory: Path | ObjectPath,
        step: int,
        *,
        chief: bool,
        commit_with: CommitWith | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> CheckpointInfo:
        """One collective save of ``state`` (every rank calls it at the same point); the
        chief's hooks' states are saved from the chief. ``commit_with`` (the chief's saver)
        plans retention and records the commit; without it the writer takes the lock.
        Only the chief's ``directory`` and ``storage_options`` count: DCP's plan carries
        them to the other ranks. A state this rank cannot encode fails the save on every
        rank (:meth:`refuse`), not here alone."""
        try:
            dcp_state = to_dcp_state(state, with_hooks=chief)
        except Exception as exc:
            refused = self.refuse(exc, step)
            if refused is exc:
                raise
            raise refused from exc
        return _run(dcp_state, _Target(directory, step, storage_options), chief, commit_with)

    def save_async(
        self,
        state: MutableMapping[str, Any],
        directory: Path | ObjectPath,
        step: int,
        *,
        chief: bool,
        commit_with: CommitWith | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> SaveFuture:
        """:meth:`save` with only the copy of ``state`` on this thread: the collective
        write and commit run on the background thread, on a process group of their own.
        The replicated entries are copied into the state layer's reused staging buffers,
        the DCP-native ones (DTensor shards) into DCP's stager's. A failing copy raises
        here and starts nothing: :meth:`refuse_async` then fails the others' save."""
        group = background_group(None)
        target = _Target(directory, step, storage_options)
        return in_background(
            to_dcp_state(state, with_hooks=chief, replicated=False),
            lambda snapshot: _run(snapshot, target, chief, commit_with, group),
            step,
            directory,
            copied=partial(staged_replicated, state),
        )

    def refuse(self, error: BaseException, step: int) -> BaseException:
        """Fail, with ``error``, the blocking collective save of ``step`` the other ranks
        are in and this rank will not make; the error to raise here (see ``_refusal.py``)."""
        return refuse(error, None, step)

    def refuse_async(
        self, error: BaseException, step: int, directory: Path | ObjectPath
    ) -> SaveFuture:
        """:meth:`refuse` for a background save this rank could not start (its copy
        failed): the others' background saves fail with ``error``, and so does the future."""
        group = background_group(None)

        def fail(_: dict[str, Any]) -> CheckpointInfo:
            raise refuse(error, group, step)

        return in_background({}, fail, step, directory)

    def restore(
        self,
        state: MutableMapping[str, Any],
        directory: Path | ObjectPath,
        step: int | None,
        basename: str,
        restore_plain: RestorePlain,
    ) -> CheckpointInfo | None:
        """Restore the newest checkpoint every rank can use (or ``step``'s) into ``state``;
        None when there is none. A checkpoint one rank finds corrupt or incomplete is
        skipped by all, so every rank restores the same one."""
        candidates = self._candidates(directory, step, basename)
        if not candidates:
            if step is not None:
                raise CheckpointNotFoundError(
                    f"no checkpoint of step {step} in {directory}", path=directory, step=step
                )
            return None
        skipped: list[str] = []
        for path in candidates:
            outcome, error, info = self._try(state, path, restore_plain)
            worst = self.max_ints([outcome])[0]
            if worst == _OK:
                for reason in skipped:
                    _LOG.warning("%s; restored step %d (%s) instead", reason, info.step, path)  # type: ignore[union-attr]
                return info
            reason = f"skipped {path}: " + (
                str(error) if error is not None else "unusable on another rank"
            )
            if worst == _FAILED or step is not None:
                if error is not None:
                    raise error
                raise CheckpointError(
                    f"restoring {path} failed on another rank (see its log)", path=path
                )
            skipped.append(reason)
        raise CheckpointCorruptError(
            f"every checkpoint in {directory} is unusable on some rank ({len(skipped)} tried); "
            f"newest: {skipped[0]}",
            path=directory,
        )

    def _candidates(
        self, directory: Path | ObjectPath, step: int | None, basename: str
    ) -> list[Path | ObjectPath]:
        """Rank 0's list, newest first, so that every rank walks the same one."""
        names: list[str] = []
        if self.rank == 0:
            names = _committed(directory, step, basename)
        box: list[Any] = [names]
        dist.broadcast_object_list(box, src=0)
        return [checkpoint_location(name) for name in box[0]]

    def _try(
        self,
        state: MutableMapping[str, Any],
        path: Path | ObjectPath,
        restore_plain: RestorePlain,
    ) -> tuple[int, BaseException | None, CheckpointInfo | None]:
        try:
            sharded = is_dcp_checkpoint(path)
        except (CheckpointCorruptError, CheckpointFormatError, CheckpointNotFoundError) as exc:
            return _UNUSABLE, exc, None
        try:
            info = restore_sharded(state, path) if sharded else restore_plain(state, path)
        except (CheckpointCorruptError, CheckpointFormatError, CheckpointNotFoundError) as exc:
            return _UNUSABLE, exc, None
        except Exception as exc:
            return _FAILED, exc, None
        return _OK, None, info


def _committed(directory: Path | ObjectPath, step: int | None, basename: str) -> list[str]:
    """The committed checkpoints of ``directory`` (``step``'s only, if given), newest
    first, as strings (local paths or URLs)."""
    if isinstance(directory, ObjectPath):
        url = str(directory)
        names = committed_names(url, basename)
        if step is not None:
            names = [n for n in names if n == committed_name(basename, step)]
        return [f"{url}/{name}" for name in names]
    if step is not None:
        path = committed_path(directory, basename, step)
        return [str(path)] if path.is_dir() else []
    if directory.is_dir():
        return [str(p) for p in commits_newest_first(directory, basename)]
    return []


class _Target(NamedTuple):
    """Where a collective save goes: the directory or URL, the step, and (for a URL) the
    chief's ``storage_options``."""

    directory: Path | ObjectPath
    step: int
    storage_options: dict[str, Any] | None


def _run(
    dcp_state: dict[str, Any],
    target: _Target,
    chief: bool,
    commit_with: CommitWith | None,
    group: Any = None,
) -> CheckpointInfo:
    """The collective save of :meth:`Collectives.save` on ``group`` (None: the world).

    Its outcome is the same on every rank, whoever fails and when: a rank failing before
    its DCP save begins (the chief's saver refusing the commit: its lock, its directory
    replaced) joins it with a refusal, so the others raise that error at once instead of
    waiting for the group's timeout; DCP gives every rank a failure inside it; and the
    chief's outcome after it (committed, or its retention failing to delete a victim) is
    broadcast to every rank."""
    directory, step, storage_options = target
    began = done = False  # this rank's DCP save began / returned

    def commit(retention: dict[str, Any] | None) -> CheckpointInfo:
        nonlocal began, done
        writer = ShardedWriter(
            directory,
            step,
            lock=commit_with is None,
            retention=retention,
            storage_options=storage_options,
        )
        began = True
        try:
            dcp_save(dcp_state, storage_writer=writer, process_group=group)
        except CheckpointException as exc:
            writer.abandon()  # the coordinator removes what the failed save left
            raise _agreed(exc, step, directory) from exc
        finally:
            writer.release()
        done = True
        return cast(CheckpointInfo, writer.info)  # None off the coordinator: unused there

    outcome: CheckpointInfo | BaseException
    try:
        outcome = commit_with(commit) if chief and commit_with is not None else commit(None)
    except Exception as exc:
        if began and not done:
            raise  # every rank raised DCP's failure (or lost its peers)
        if done:
            outcome = exc  # only the chief knows: its saver failed after the commit
        else:
            refused = refuse(exc, group, step)
            if refused is exc:
                raise
            raise refused from exc
    box = [portable_error(outcome) if isinstance(outcome, BaseException) else outcome]
    dist.broadcast_object_list(box, src=0, group=group)  # in memory only: no pickle on disk
    if isinstance(outcome, BaseException):
        raise outcome
    return _outcome(box[0], step)


def _agreed(exc: CheckpointException, step: int, directory: Path | ObjectPath) -> BaseException:
    """The error of a failed DCP save, the same on every rank: a refusing rank's own, else
    the first of this project's errors (:func:`typed_error`)."""
    refused = refused_error(exc, step)
    if refused is not None:
        return refused[1]
    return typed_error(exc, f"the save of step {step} in {directory}")


def _outcome(value: Any, step: int) -> CheckpointInfo:
    """The chief's broadcast outcome as this rank's result."""
    if isinstance(value, CheckpointInfo):
        return value
    if isinstance(value, BaseException):
        raise value
    if isinstance(value, str):
        raise CheckpointWriteError(f"the chief's commit of step {step} failed: {value}", step=step)
    raise CheckpointWriteError(  # pragma: no cover - commits or raises
        f"the save of step {step} did not commit", step=step
    )
