"""Rollbacks and recoverable errors under ``torch.distributed``: what the ranks agree on.

One process undoes a step or re-creates its session on its own. In a job, every rank must
do it at the same point, or the others would wait in a collective (DDP's gradient
all-reduce, the next sync point) that the rank re-creating itself never joins. So:

- A ``RollbackRequested`` a hook raises on any rank is noted here; the ranks agree on it at
  the next sync point (``_collective.py``: a flag in its first all-reduce when it was noted
  at an earlier step, in its second when a hook of that sync point raised it). Then every
  rank waits for the background saves in flight, restores the same checkpoint and skips
  the same steps. Of several requests the one whose first skipped step is earliest wins: a
  later bad step (often its consequence: a NaN spreads through the gradient all-reduce) is
  undone too, re-run, and asked for again if it is still bad.
- A recoverable error is recovered from only when every rank raised it at the same point:
  errors carried to every rank from a sync point (a hook or listener there, an
  ``after_create_session``, a collective save or restore) are marked here. Raised
  anywhere else, the rank raises ``DistributedRecoveryError`` instead of re-creating its
  session alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from trainhooks._exceptions import (
    DistributedRecoveryError,
    RollbackRequested,
    portable_error,
)

if TYPE_CHECKING:
    from trainhooks._dist._session_sync import Collectives

__all__ = ["RecoveryAgreement", "unagreed_at_close"]


class RecoveryAgreement:
    """This rank's rollback request awaiting agreement, and the last error every rank raised."""

    def __init__(self) -> None:
        self.pending: RollbackRequested | None = None  # noted here, not agreed yet
        self._agreed: RollbackRequested | None = None
        self._together: BaseException | None = None

    def note(self, request: RollbackRequested) -> None:
        """Keep ``request`` until the next sync point (the earliest, if several)."""
        if self.pending is None or _order(request) < _order(self.pending):
            self.pending = request

    def agree(self, collectives: Collectives, step: int) -> RollbackRequested:
        """Every rank's request (a collective: every rank calls it at the same point); the
        same agreed request returned on every rank."""
        mine, self.pending = self.pending, None
        offer = None if mine is None else (mine.step, tuple(mine.skip_steps), mine.reason)
        offers: list[Any] = collectives.gather_objects(offer)
        rank, (target, skip, reason) = min(
            ((r, o) for r, o in enumerate(offers) if o is not None),
            key=lambda ranked: (_first_skipped(*ranked[1][:2]), ranked[1][0], ranked[0]),
        )
        agreed = RollbackRequested(
            target, tuple(skip), f"{reason} (asked on rank {rank}, agreed at step {step})"
        )
        self._agreed = agreed
        return agreed

    def is_agreed(self, request: RollbackRequested) -> bool:
        return request is self._agreed

    @contextmanager
    def together(self) -> Iterator[None]:
        """Mark an error raised in the block as raised on every rank at this point."""
        try:
            yield
        except Exception as exc:
            self._together = exc
            raise

    def raise_everywhere(
        self, collectives: Collectives, failure: Exception | None, where: str
    ) -> None:
        """Raise ``failure`` here and the first failing rank's error on the others (itself
        when it survives pickling in memory, else a ``RuntimeError`` describing it); a
        collective: every rank calls it at the same point, so the error is marked."""
        errors = collectives.gather_objects(None if failure is None else portable_error(failure))
        if failure is not None:
            self._together = failure
            raise failure
        rank, error = next((r, e) for r, e in enumerate(errors) if e is not None)
        if not isinstance(error, Exception):
            error = RuntimeError(f"rank {rank} failed {where}: {error}")
        else:
            _note(error, f"raised on rank {rank} {where}")
        self._together = error
        raise error

    def check_recoverable(self, error: BaseException, rank: int, step: int) -> None:
        """Raise ``DistributedRecoveryError`` unless every rank raised ``error`` together."""
        if error is self._together:
            return
        raise DistributedRecoveryError(
            f"rank {rank} raised {type(error).__name__}: {error} at global step {step}, which "
            "is in recoverable_errors, but not at a sync point: the other ranks may be "
            "inside a collective of this step (DDP's gradient all-reduce) that this rank "
            "would never join while re-creating its session. A torch.distributed session "
            "recovers only from errors raised at a sync point (a hook's after_run there, "
            "after_create_session, a listener, a collective save or restore); let the job "
            "fail and relaunch it: every rank resumes from the last checkpoint "
            "(docs/distributed.md)",
            rank=rank,
            step=step,
        ) from error


def unagreed_at_close(agreed: RollbackRequested, rank: int, step: int) -> Exception:
    """The error of a session closing while a rank still asks for a rollback."""
    return DistributedRecoveryError(
        f"the session closed at global step {step} while a rollback was still to be agreed "
        f"({agreed.reason}): its final save is skipped on every rank, so the "
        "steps to undo are not saved. End the loop at a sync point (a save step, or a "
        "multiple of sync_every_steps) to roll back before the close; a relaunch resumes "
        "from the last checkpoint",
        rank=rank,
        step=step,
    )


def _note(error: BaseException, note: str) -> None:
    if hasattr(error, "add_note"):  # Python >= 3.11
        error.add_note(note)
    else:  # 3.10: same attribute, not shown by the traceback printer
        error.__notes__ = [*getattr(error, "__notes__", []), note]  # type: ignore[attr-defined]


def _order(request: RollbackRequested) -> tuple[int, int]:
    return _first_skipped(request.step, tuple(request.skip_steps)), request.step


def _first_skipped(step: int, skip: tuple[int, ...]) -> int:
    return min(skip) if skip else step
