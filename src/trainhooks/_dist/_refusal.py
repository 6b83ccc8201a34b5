"""A rank's refusal to take part in a collective save the other ranks are already in.

A rank that fails before its side of a collective save begins (the chief's saver refusing
the commit, a copy of the state failing) would leave the others waiting in DCP's first
exchange until the group's timeout (30 minutes by default). Instead it joins the save with
a writer whose local plan raises :class:`Refusal`: DCP gathers every rank's plan on the
coordinator before anything is staged or written, so the save fails at once on every rank
with the same ``CheckpointException``, nothing committed is touched, and
:func:`refused_error` gives every rank the refusing rank's own error.
"""

from __future__ import annotations

import os
from typing import Any

import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
from torch.distributed.checkpoint.storage import StorageWriter, WriteResult
from torch.futures import Future

from trainhooks._exceptions import CheckpointWriteError, portable_error

__all__ = ["Refusal", "refuse", "refused_error"]


class Refusal(Exception):
    """Raised in DCP's plan exchange by a rank that cannot take part: carries its error
    (or, if that does not survive pickling, its text) to every rank."""


class _RefusingWriter(StorageWriter):
    """A writer whose local plan raises: nothing is staged or written on any rank."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self._payload = portable_error(error)

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        pass

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        return True

    def storage_meta(self) -> StorageMeta | None:
        return None

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        pass

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        raise Refusal(self._payload)

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:  # pragma: no cover
        raise AssertionError("a refused save has no global plan")

    def write_data(
        self, plan: SavePlan, planner: SavePlanner
    ) -> Future[list[WriteResult]]:  # pragma: no cover - refused before any write
        raise AssertionError("a refused save writes nothing")

    def finish(
        self, metadata: Metadata, results: list[list[WriteResult]]
    ) -> None:  # pragma: no cover
        raise AssertionError("a refused save has nothing to finish")


def refuse(error: BaseException, group: Any, step: int) -> BaseException:
    """Join the collective save the other ranks are in (on ``group``; None: the world) so
    that it fails on every rank; returns the error to raise here (the lowest refusing
    rank's: ``error`` itself when that is this rank)."""
    try:
        dcp_save({}, storage_writer=_RefusingWriter(error), process_group=group)
    except CheckpointException as exc:
        refused = refused_error(exc, step)
        if refused is None or refused[0] == dist.get_rank(group):
            return error
        return refused[1]
    raise AssertionError("a refused save cannot succeed")  # pragma: no cover


def refused_error(exc: CheckpointException, step: int) -> tuple[int, BaseException] | None:
    """The lowest rank that refused the save of ``exc`` and its error, the same on every
    rank (None: no rank refused; the save failed in DCP's own steps)."""
    for rank in sorted(exc.failures):
        failure = exc.failures[rank][0]
        if isinstance(failure, Refusal):
            payload = failure.args[0] if failure.args else "unknown error"
            if isinstance(payload, BaseException):
                note = f"raised on rank {rank} before its side of the save of step {step} began"
                if hasattr(payload, "add_note"):  # Python >= 3.11
                    payload.add_note(note)
                return rank, payload
            return rank, CheckpointWriteError(
                f"the save of step {step} failed on rank {rank} before its side of the save "
                f"began: {payload}; nothing was written",
                step=step,
            )
    return None
