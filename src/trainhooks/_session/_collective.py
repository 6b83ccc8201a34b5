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
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainhooks._session._dispatch import Coordinator
from trainhooks._store._layout import DEFAULT_BASENAME as BASE
from trainhooks._store._layout import parse_committed
from trainhooks._store._remote._url import ObjectPath, checkpoint_location

if TYPE_CHECKING:
    from trainhooks._dist._session_sync import Collectives
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
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"directory must be a path or a URL, got {directory!r}")
        commit_with = getattr(saver, "commit_with", None)
        path = checkpoint_location(directory)
        return self._c.save(
            state,
            path,
            step,
            chief=True,
            commit_with=None if commit_with is None else lambda c: commit_with(path, step, c),
            storage_options=getattr(saver, "storage_options", None),
        )

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

        return self._c.restore(session.checkpoint_state, directory, step, BASE, restore_plain)

    def at_creation(self, session: MonitoredSession) -> None:
        """Before ``after_create_session``: the schedule (once), the grid from this step,
        the same step everywhere, and the saves the chief makes now."""
        if not self._scheduled:
            self._scheduled = True
            mine = [getattr(h, "collective_save_steps", None) for h in self._savers]
            steps = math.gcd(*(int(s) for s in mine if s))  # every saver's steps; 0: none
            schedule = self._c.broadcast_ints([self.sync_every_steps, steps])
            self.sync_every_steps = schedule[0]
            self.grid = _grid(schedule[0], schedule[1] or None)
        step = session.global_step
        self.next_step = step + self.grid
        self._agree(session, "create", step)

    def after_creation(self, session: MonitoredSession) -> None:
        """After ``after_create_session``: stops asked for there stop every rank now."""
        self._apply(session, self._c.max_ints(self._flags(session)))

    def at_step(self, session: MonitoredSession, step: int) -> None:
        """A sync point, before the hooks' ``after_run``."""
        self.next_step += ((step - self.next_step) // self.grid + 1) * self.grid
        self._agree(session, "step", step)

    def after_sync(self, session: MonitoredSession) -> None:
        """After the ``after_run`` of a sync point: the stops its hooks and listeners asked
        for (a listener's ``after_save``) stop every rank at this step."""
        self.synced_at = None
        self._apply(session, self._c.max_ints(self._flags(session)))

    def at_end(self, session: MonitoredSession) -> None:
        """Before the hooks' ``end``: the same step on every rank, and the final saves."""
        self._agree(session, "end", session.global_step)

    def _agree(self, session: MonitoredSession, phase: str, step: int) -> None:
        count, failure = 0, None
        if self.is_chief:
            try:
                count = sum(bool(h.collective_save_due(session, phase, step)) for h in self._savers)
            except Exception as exc:  # tell the other ranks before raising, or they would wait
                failure = exc
        flags = self._c.max_ints(
            [count, step, -step, int(failure is not None), *self._flags(session)]
        )
        if flags[3]:
            if failure is not None:
                raise failure
            raise RuntimeError(
                f"the chief (rank 0) failed at the sync point ({phase}) of step {step}; its "
                "error is in its log"
            )
        if flags[1] != -flags[2]:
            raise RuntimeError(
                f"the ranks reached a sync point ({phase}) at different global steps "
                f"({-flags[2]} to {flags[1]}; this rank: {step}): every rank must run the "
                "same number of steps and close its session at the same step"
            )
        self._apply(session, flags[4:])
        self.synced_at = step if phase == "step" else None
        if not self.is_chief:
            for _ in range(flags[0]):
                self._c.save(session.checkpoint_state, Path("."), step, chief=False)

    def _flags(self, session: MonitoredSession) -> list[int]:
        coord = session._coord
        requested = isinstance(coord, SyncedCoordinator) and coord.requested
        return [int(requested), int(self.preempt_requested), self.preempt_signal or 0]

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


def _grid(sync_every: int, save_steps: int | None) -> int:
    if save_steps is None:
        return sync_every
    if save_steps <= sync_every:
        return save_steps
    return math.gcd(save_steps, sync_every)
