"""A session under ``torch.distributed``: where the ranks agree, and on what.

Why not every step: an all-reduce per step costs a network round trip on every rank; a
session only needs the ranks to agree on four things, and only at **sync points**:

- whether the chief's saver hooks save now (the other ranks must join the collective save);
- whether any rank asked to stop (a listener, ``StopAtStepHook``, a NaN hook);
- whether any rank got a preemption signal (a signal on any rank stops all ranks);
- at creation and at close: the same global step, and whether the chief saves then.

Sync points are the session's creation, its close, and every ``grid`` steps from the
creation step: ``grid`` is the chief's ``save_steps`` (of several saver hooks: their
greatest common divisor) when it is at most ``sync_every_steps`` (K), else the greatest
common divisor of both, or K for a time-based or no saver: so every step-based save lands
on a sync point, and no two sync points are more than K steps apart. At a sync point one
all-reduce of a few integers carries the flags, before the hooks' ``after_run`` (so a
rank can join the save before its own hooks run, and the collectives of hooks that every
rank has keep their order); after them a second one carries the stops they asked for (a
listener's ``after_save`` among them), so those stop every rank at that very step.
Between sync points a stop or signal is only noted: ``should_stop()`` becomes true on
every rank at the same sync point.

A hook takes part by having ``collective_save_due(session, phase, step) -> bool``
(``phase``: ``"create"``, ``"step"`` or ``"end"``) and ``collective_save_steps`` (its
step interval, or None): on the chief it answers, before the phase's hooks run, whether it
will save in that phase, and saves through ``session.distributed.save``.
``CheckpointSaverHook`` does; that is how the TF idiom (the saver hook in
``chief_only_hooks``) works unchanged on every rank.

A hook whose ``collective_save_async`` is true saves in the background
(``session.distributed.save_async``): the chief starts it in its hook, the other ranks
once the second all-reduce says it started (so a chief failing before it, in a listener's
``before_save``, starts nothing anywhere). The ranks' saves finish at different instants,
so each first all-reduce also carries how many of its background saves each rank has seen
finish: the minimum is delivered on every rank at that sync point (the same typed error
raised everywhere, or the chief's hook calls ``after_save``), never between sync points. A
sync point with a save due, and the close, first wait for every save in flight: at most one
is in flight, and ``after_save(S1)`` comes before ``before_save(S2)``. At the close the
final save is a blocking one. An error a hook raises at a sync point where no blocking save
is being joined goes to every rank through the second all-reduce.

Rollbacks and recoverable errors: the ranks agree on them here too (``_dist_recovery.py``
says how): a flag in each all-reduce says whether a rank has a rollback to ask for.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import MutableMapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainhooks._exceptions import CheckpointWriteError
from trainhooks._session._background_saves import BackgroundSaves
from trainhooks._session._dispatch import Coordinator
from trainhooks._session._dist_recovery import RecoveryAgreement, unagreed_at_close
from trainhooks._store._layout import DEFAULT_BASENAME as BASE
from trainhooks._store._layout import parse_committed
from trainhooks._store._remote._url import ObjectPath, checkpoint_location

if TYPE_CHECKING:
    from trainhooks._dist._session_sync import Collectives
    from trainhooks._exceptions import RollbackRequested
    from trainhooks._session._core import MonitoredSession
    from trainhooks._store._info import CheckpointInfo

__all__ = ["DEFAULT_SYNC_EVERY_STEPS", "DistributedSession", "SyncedCoordinator", "detect"]


DEFAULT_SYNC_EVERY_STEPS = 100


def detect(sync_every_steps: int) -> DistributedSession | None:
    """The distributed side of a new session when ``torch.distributed`` is initialised with
    more than one rank, else None; never imports torch itself."""
    if isinstance(sync_every_steps, bool) or not isinstance(sync_every_steps, int):
        raise TypeError(f"sync_every_steps must be an int, got {sync_every_steps!r}")
    if sync_every_steps < 1:
        raise ValueError(f"sync_every_steps must be >= 1, got {sync_every_steps}")
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    if dist.get_world_size() < 2:
        return None
    from trainhooks._dist._session_sync import Collectives  # lazy: imports torch

    return DistributedSession(Collectives(), sync_every_steps)


class SyncedCoordinator(Coordinator):
    """A stop flag whose requests take effect only once the ranks agree on them.

    Setting ``stop`` notes a request (``requested``); ``stop`` reads the agreed flag.
    """

    __slots__ = ("agreed", "requested")

    def __init__(self) -> None:
        self.agreed = False
        self.requested = False

    @property
    def stop(self) -> bool:
        return self.agreed

    @stop.setter
    def stop(self, value: bool) -> None:
        if value:
            self.requested = True
        else:
            self.requested = self.agreed = False

    def halt(self) -> None:
        self.agreed = self.requested = True


class DistributedSession:
    """``session.distributed``: this rank's place in the job and the collective save.

    ``rank``, ``world_size``, ``is_chief`` (rank 0) and ``sync_every_steps`` describe the
    job; ``save`` is what a chief's saver hook calls instead of its saver's ``save``.
    """

    def __init__(self, collectives: Collectives, sync_every_steps: int) -> None:
        self._c = collectives
        self.rank = collectives.rank
        self.world_size = collectives.world_size
        self.is_chief = self.rank == 0
        self.sync_every_steps = sync_every_steps
        self.grid = sync_every_steps
        self.next_step = sync_every_steps
        self.synced_at: int | None = None  # the step of the sync point being run
        self.preempt_signal: int | None = None  # a signal noted here, not yet agreed
        self.preempt_requested = False
        self._savers: list[Any] = []
        self._scheduled = False
        self._step = 0  # the step of the sync point being run
        self._blocking_left = 0  # chief: blocking saves the other ranks are waiting in
        self._blocking_failed = False  # chief: one failed on every rank at this sync point
        self._background_left = 0  # chief: background saves this sync point may start
        self._background = BackgroundSaves()
        self.recovery = RecoveryAgreement()

    # -- what a saver hook uses ---------------------------------------------------------
    def save(
        self,
        state: MutableMapping[str, Any],
        directory: Any,
        step: int,
        saver: Any = None,
    ) -> CheckpointInfo:
        """The chief's side of a collective save of ``state`` at ``step`` into
        ``directory`` (a directory every rank sees, or a URL such as ``s3://bucket/run``);
        ``saver`` (a ``trainhooks.Saver``) keeps its retention (and, for a URL, its lease
        and ``storage_options``, which reach every rank with the plan)."""
        path = _location(directory)
        self._blocking_left -= 1  # joined now: its outcome is the same on every rank
        try:
            with self.recovery.together():  # its error is raised on every rank
                return self._c.save(
                    state,
                    path,
                    step,
                    chief=True,
                    commit_with=_commit_with(saver, path, step),
                    storage_options=getattr(saver, "storage_options", None),
                )
        except BaseException:
            self._blocking_left, self._blocking_failed = 0, True  # every rank raised it
            raise

    def save_async(
        self,
        state: MutableMapping[str, Any],
        directory: Any,
        step: int,
        saver: Any = None,
    ) -> Future[CheckpointInfo]:
        """:meth:`save` in the background: every rank copies its state once the step's
        hooks have run (the chief's ``state`` here), then the write goes on in the
        background; the future is delivered at a sync point (:meth:`is_delivered`). At the
        close, or for a second save at one sync point, it is a blocking save, already done."""
        path = _location(directory)
        if self._background_left <= 0:
            return self._background.done_now(self.save(state, path, step, saver))
        self._background_left -= 1
        return self._background.request(
            state,
            path,
            step,
            _commit_with(saver, path, step),
            getattr(saver, "storage_options", None),
        )

    def is_delivered(self, future: Future[Any]) -> bool:
        """Whether every rank agreed, at a sync point, that the background save of
        ``future`` has finished: its ``after_save`` (or error) is due now."""
        return self._background.is_delivered(future)

    @property
    def rollback_pending(self) -> bool:
        """Whether a hook of this rank asked for a rollback that the ranks have not agreed
        on yet (at the next sync point): the steps until then will be undone."""
        return self.recovery.pending is not None

    # -- the session's side ---------------------------------------------------------------
    def attach(self, hooks: list[object]) -> None:
        """Note the hooks that save collectively (see the module docstring)."""
        self._savers = [h for h in hooks if callable(getattr(h, "collective_save_due", None))]

    def restore(
        self, session: MonitoredSession, directory: Path | ObjectPath, step: int | None
    ) -> CheckpointInfo | None:
        from trainhooks._saver import Saver  # lazy: keeps importing the session cheap

        def restore_plain(
            state: MutableMapping[str, Any], path: Path | ObjectPath
        ) -> CheckpointInfo:
            # a checkpoint of one process (e.g. before the job went distributed)
            with Saver(max_to_keep=None) as saver:
                return saver.restore(state, path.parent, parse_committed(path.name, BASE))

        with self.recovery.together():  # the same outcome on every rank
            return self._c.restore(session.checkpoint_state, directory, step, BASE, restore_plain)

    def at_creation(self, session: MonitoredSession) -> None:
        """Before ``after_create_session``: the schedule (once), the grid from this step,
        the same step everywhere, and the saves the chief makes now."""
        if not self._scheduled:
            self._scheduled = True
            mine = [getattr(h, "collective_save_steps", None) for h in self._savers]
            steps = math.gcd(*(int(s) for s in mine if s))  # every saver's steps; 0: none
            background = any(getattr(h, "collective_save_async", False) for h in self._savers)
            schedule = self._c.broadcast_ints([self.sync_every_steps, steps, int(background)])
            self.sync_every_steps = schedule[0]
            self.grid = _grid(schedule[0], schedule[1] or None)
            if schedule[2]:  # creating a group is a collective: now, on every rank
                self._c.prepare_background()
        step = session.global_step
        self.next_step = step + self.grid
        self.recovery.pending = None  # every rank is re-created from a checkpoint now
        self._agree(session, "create", step)

    def after_creation(self, session: MonitoredSession, failure: Exception | None = None) -> None:
        """After ``after_create_session``: stops asked for there stop every rank now; the
        other ranks start the chief's background saves; a hook's ``failure`` is raised on
        every rank."""
        self._second(session, failure)

    def at_step(self, session: MonitoredSession, step: int) -> RollbackRequested | None:
        """A sync point, before the hooks' ``after_run``; returns the rollback the ranks
        agreed on now (asked for at an earlier step), which undoes this step: no save,
        no ``after_run``."""
        self.next_step += ((step - self.next_step) // self.grid + 1) * self.grid
        return self._agree(session, "step", step)

    def after_sync(
        self, session: MonitoredSession, failure: Exception | None = None
    ) -> RollbackRequested | None:
        """After the ``after_run`` of a sync point: the stops its hooks and listeners asked
        for (a listener's ``after_save``) stop every rank at this step; as
        :meth:`after_creation` for background saves and ``failure``; returns the rollback
        the ranks agreed on (one asked for by a hook of this sync point)."""
        self.synced_at = None
        return self._second(session, failure)

    def note_rollback(self, request: RollbackRequested) -> None:
        """A hook of this rank asked for ``request``: the ranks agree at the next sync point."""
        self.recovery.note(request)

    def at_end(self, session: MonitoredSession) -> None:
        """Before the hooks' ``end``: the same step on every rank, and the final saves."""
        self._agree(session, "end", session.global_step)

    def release(self) -> None:
        """At the close, whatever happened: fail a final save the other ranks wait in and
        the chief never made (a hook's ``end`` raised first); wait for the saves in flight."""
        if self._blocking_left > 0:
            self._blocking_left = 0
            error = sys.exc_info()[1]  # what is ending the session, in a finally block
            if not isinstance(error, Exception):
                error = CheckpointWriteError(
                    f"the chief's session failed before its save of step {self._step} (see "
                    "rank 0's log); nothing was written",
                    step=self._step,
                )
            self._c.refuse(error, self._step)
        self._background.release()

    def _agree(self, session: MonitoredSession, phase: str, step: int) -> RollbackRequested | None:
        blocking = background = 0
        failure: Exception | None = None
        if self.is_chief:
            try:
                due = [h for h in self._savers if h.collective_save_due(session, phase, step)]
            except Exception as exc:  # tell the other ranks before raising, or they would wait
                failure, due = exc, []
            # one background save per sync point (the next would wait for it), none at the end
            background = int(phase != "end" and any(_is_async(h) for h in due))
            blocking = len(due) - background
        failed, finished = int(failure is not None), self._background.finished()
        flags = self._c.max_ints(
            [blocking, background, step, -step, failed, -finished, *self._flags(session)]
        )
        self._step = step
        if flags[4]:
            self._raise_everywhere(failure, 0)
        if flags[2] != -flags[3]:
            raise RuntimeError(
                f"the ranks reached a sync point ({phase}) at different global steps "
                f"({-flags[3]} to {flags[2]}; this rank: {step}): every rank must run the "
                "same number of steps and close its session at the same step"
            )
        self._apply(session, flags[6:9])
        if flags[9]:
            return self._roll_back_now(session, phase, step)
        self.synced_at = step if phase == "step" else None
        # Finished on every rank: delivered now; before a new save or the close, all are.
        every = flags[0] or flags[1] or phase == "end"
        with self.recovery.together():  # a failed save: the same error on every rank
            self._background.deliver(len(self._background.inflight) if every else -flags[5], step)
        self._background_left = flags[1]
        self._background.requested = []
        self._blocking_left = flags[0] if self.is_chief else 0
        self._blocking_failed = False
        if not self.is_chief:
            for _ in range(flags[0]):
                with self.recovery.together():
                    self._c.save(session.checkpoint_state, Path("."), step, chief=False)
        return None

    def _roll_back_now(
        self, session: MonitoredSession, phase: str, step: int
    ) -> RollbackRequested | None:
        """A rollback asked for before this sync point: no save now, no ``after_run``; the
        saves in flight finish first (the target may be one of them)."""
        self.synced_at = None
        self._blocking_left = self._background_left = 0
        self._background.requested = []
        with self.recovery.together():
            self._background.deliver(len(self._background.inflight), step)
        agreed = self.recovery.agree(self._c, step)
        if phase == "end":  # the final save would keep the steps to undo
            raise unagreed_at_close(agreed, self.rank, step)
        return agreed

    def _second(
        self, session: MonitoredSession, failure: Exception | None
    ) -> RollbackRequested | None:
        if failure is not None and (self._blocking_left > 0 or self._blocking_failed):
            # a blocking save the others joined failed (they raised its error too) or was
            # never made (they wait in it: it fails for them with this error); no agreement
            # possible, no background save
            for ask in self._background.requested:
                ask.future.cancel()
            if self._blocking_left > 0:
                self._blocking_left = 0
                self._c.refuse(failure, self._step)
            raise failure
        requested, self._background.requested = self._background.requested, []
        self._background_left = 0
        values = self._c.max_ints([*self._flags(session), len(requested), int(failure is not None)])
        # Every rank copies its state for the saves the chief's hooks asked for, at this
        # same point (a DCP-native state_dict() may run collectives), even after a failure.
        own_state = lambda: session.checkpoint_state  # noqa: E731 - read when copied
        failed = self._background.start(self._c, values[4], requested, own_state, self._step)
        if values[4] and self._c.max_ints([int(failed is not None)])[0]:
            self._raise_everywhere(failed, 1)  # a copy failed: its save fails everywhere too
        if values[5]:
            self._raise_everywhere(failure, 1)
        self._apply(session, values[:3])
        if not values[3]:
            return None
        with self.recovery.together():  # the target may be a save in flight: wait for all
            self._background.deliver(len(self._background.inflight), self._step)
        return self.recovery.agree(self._c, self._step)

    def _raise_everywhere(self, failure: Exception | None, where: int) -> None:
        """Raise ``failure`` here and the first failing rank's error on the others."""
        moment = ("before", "after")[where]
        self.recovery.raise_everywhere(
            self._c, failure, f"{moment} the hooks of step {self._step}'s sync point"
        )

    def _flags(self, session: MonitoredSession) -> list[int]:
        coord = session._coord
        requested = isinstance(coord, SyncedCoordinator) and coord.requested
        rollback = int(self.recovery.pending is not None)
        return [int(requested), int(self.preempt_requested), self.preempt_signal or 0, rollback]

    def _apply(self, session: MonitoredSession, flags: list[int]) -> None:
        stop, preempt, signum = flags
        if preempt:
            session._agree_preemption(signum or None)
        if stop or preempt:
            coord = session._coord
            if isinstance(coord, SyncedCoordinator):
                coord.agreed = True

    def note_preemption(self, signum: int | None) -> None:
        """What the signal handler does under ``torch.distributed``: note it only."""
        if not self.preempt_requested:
            self.preempt_requested = True
            self.preempt_signal = signum


def _location(directory: Any) -> Path | ObjectPath:
    """A save's directory every rank sees, or its URL."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a path or a URL, got {directory!r}")
    return checkpoint_location(directory)


def _commit_with(saver: Any, path: Path | ObjectPath, step: int) -> Any:
    """The chief's saver's ``commit_with`` for this save (its lock and retention), if any."""
    commit_with = getattr(saver, "commit_with", None)
    return None if commit_with is None else lambda commit: commit_with(path, step, commit)


def _is_async(hook: Any) -> bool:
    return bool(getattr(hook, "collective_save_async", False))


def _grid(sync_every: int, save_steps: int | None) -> int:
    if save_steps is None:
        return sync_every
    if save_steps <= sync_every:
        return save_steps
    return math.gcd(save_steps, sync_every)
