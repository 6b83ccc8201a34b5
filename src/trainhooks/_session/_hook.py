"""The hook protocol: ``SessionRunHook`` and the values passed around one ``run`` call.

The lifecycle, documented once here (TF's order, kept exactly):

1. ``begin()`` — once, before the session exists; no step is known yet.
2. ``after_create_session(session, coord)`` — the session exists and its state has been
   restored (or initialised); runs again after a recoverable error re-creates it.
3. For each ``session.run(fn, ...)``: every hook's ``before_run(run_context)`` in list
   order (each may return ``SessionRunArgs`` naming results it wants) → the user's step →
   every hook's ``after_run(run_context, run_values)`` in list order. An ``after_run``
   may raise ``RollbackRequested`` to undo the step: the hooks after it do not see the
   step, the session restores the checkpoint the request names and calls every hook's
   ``after_create_session`` again (2.), as after a recoverable error. A run whose step
   is in ``session.skipped_steps`` calls no hook at all.
4. ``end(session)`` — once, only when the session closes without an exception. After a
   preemption signal the session closes this way at the next step boundary (the saver
   hook's ``end`` saves), then raises ``Preempted``.
5. ``release()`` — once per session when it closes, on every exit path: after ``end`` on
   a normal close, and also after an exception, or when ``begin`` or the creation failed.
   A hook gives back here what it holds outside Python's memory (a directory lock, an open
   event file, a running profiler), so a crashed step never leaves it held. It must be
   safe to call when the hook holds nothing (``begin`` may not have run). If several
   hooks' ``release`` raise, every hook is still released and the first error propagates.
   TF has no such event (its hooks hold no locks); it is what the built-in saver, summary
   and profiler hooks use, and any hook may override it.

``session`` in these methods (and ``run_context.session``) is a ``HookSession``: the
members listed there are what a hook or a checkpoint listener may use.

A hook overrides only what it needs: the session builds each event's call list once and
skips methods a hook leaves as the no-op defaults below, so an idle hook costs nothing per
step.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from trainhooks._store._remote._url import ObjectPath

if TYPE_CHECKING:
    from trainhooks._session._collective import DistributedSession
    from trainhooks._store._info import CheckpointInfo

__all__ = [
    "HookSession",
    "SessionRunArgs",
    "SessionRunContext",
    "SessionRunHook",
    "SessionRunValues",
    "overrides",
]


class HookSession(Protocol):
    """The session as hooks and checkpoint listeners see it: all they may use of it.

    ``MonitoredSession`` (and so ``MonitoredTrainingSession`` and
    ``SingularMonitoredSession``) provides it; a user-written hook annotates its
    ``session`` arguments with this type and can do all that the built-in hooks do.
    """

    @property
    def global_step(self) -> int:
        """Steps run so far, counted from the restored checkpoint's step (0 without one).

        Advanced by ``steps_per_run`` after each step, before ``after_run``.
        """
        ...

    @property
    def state(self) -> MutableMapping[str, Any]:
        """What checkpoints hold: the mapping of names to model, optimizer, arrays, ...

        Restored in place at creation; a saver hook saves it, a listener may evaluate or
        export it.
        """
        ...

    @property
    def checkpoint_dir(self) -> Path | ObjectPath | None:
        """The directory state is restored from at creation, or None."""
        ...

    @property
    def checkpoint_state(self) -> MutableMapping[str, Any]:
        """What a saver writes: ``state`` plus the hooks' and listeners' own states.

        Those are the states of every hook and listener with ``state_dict()`` /
        ``load_state_dict()``, under one reserved entry (``"__trainhooks__"``); the session
        restores them at creation. A hook that saves checkpoints saves this mapping.
        """
        ...

    @property
    def steps_per_run(self) -> int:
        """How many training steps one ``run`` call counts for (TF's ``steps_per_run``)."""
        ...

    @property
    def restored_checkpoint(self) -> CheckpointInfo | None:
        """The checkpoint ``state`` was restored from, while the state still equals it.

        None when nothing was restored and as soon as a step has run since the restore.
        ``CheckpointSaverHook`` reads it to skip rewriting a checkpoint identical to the
        one on disk.
        """
        ...

    @property
    def distributed(self) -> DistributedSession | None:
        """Under ``torch.distributed`` (world > 1): this rank's ``rank``, ``world_size``,
        ``is_chief``, and the collective ``save`` a chief's saver hook calls; else None.

        A hook that saves implements ``collective_save_due`` to take part (see
        ``_session/_collective.py`` and docs/distributed.md).
        """
        ...

    def request_stop(self) -> None:
        """Ask the session to stop: ``should_stop()`` becomes true, no further step runs."""
        ...


class SessionRunHook:
    """Base class of every hook; all methods are no-ops (see the module docstring)."""

    def begin(self) -> None:
        """Called once before the session is created; no step is known yet."""

    def after_create_session(self, session: HookSession, coord: Any) -> None:
        """Called when the session exists and its state is restored or initialised."""

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs | None:
        """Called before each step; return ``SessionRunArgs`` to ask for named results."""
        return None

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        """Called after each step with the results the hook asked for."""

    def end(self, session: HookSession) -> None:
        """Called once when the session closes normally (never after an exception)."""

    def release(self) -> None:
        """Called once when the session closes, on every exit path: give back what is held."""


def overrides(hook: object, method: str, base: type = SessionRunHook) -> bool:
    """True when ``hook``'s class replaces ``base``'s no-op ``method``.

    The dispatcher uses this to build its call lists once and skip no-op methods.
    """
    return getattr(type(hook), method, None) is not getattr(base, method)


@dataclass(frozen=True)
class SessionRunArgs:
    """What a hook asks of one step: names of values in the step's returned mapping.

    ``fetches`` may be a single name, a list/tuple of names or a dict of ``key: name``;
    ``run_values.results`` comes back in the same shape. ``feed_dict`` and ``options``
    exist for TF compatibility: ``feed_dict`` entries are passed to the step as keyword
    arguments, ``options`` is accepted and ignored.
    """

    fetches: Any = None
    feed_dict: Mapping[str, Any] | None = None
    options: Any = None


@dataclass
class SessionRunContext:
    """The context of one ``run`` call: the session, the original arguments and stop requests."""

    original_args: SessionRunArgs
    session: HookSession
    _stop_requested: bool = field(default=False, repr=False)

    def request_stop(self) -> None:
        """Ask the session to stop after this step (``should_stop()`` becomes true)."""
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        """Whether a hook asked to stop during this step."""
        return self._stop_requested


class SessionRunValues(NamedTuple):
    """What one step produced for one hook (a named tuple, as in TF).

    ``results`` holds the values named by that hook's ``SessionRunArgs`` (``None`` when it
    asked for nothing); ``options`` and ``run_metadata`` exist for TF compatibility.
    ``step_result`` is the whole value the user's step returned.
    """

    results: Any
    options: Any = None
    run_metadata: Any = None
    step_result: Any = None


def select_fetches(fetches: Any, step_result: Any) -> Any:
    """Pick the values ``fetches`` names out of a step's returned mapping, keeping its shape."""
    if fetches is None:
        return None
    if isinstance(fetches, str):
        return _lookup(step_result, fetches)
    if isinstance(fetches, Mapping):
        return {key: select_fetches(name, step_result) for key, name in fetches.items()}
    if isinstance(fetches, Sequence):
        same_kind: Any = type(fetches)  # a list or tuple of names gives a list or tuple
        return same_kind(select_fetches(name, step_result) for name in fetches)
    raise TypeError(
        f"SessionRunArgs.fetches must be a name, a list/tuple or a dict of names, "
        f"got {type(fetches).__name__}"
    )


def _lookup(step_result: Any, name: str) -> Any:
    if not isinstance(step_result, Mapping):
        raise KeyError(
            f"a hook asked for {name!r}, but the step returned {type(step_result).__name__}, "
            f"not a mapping; return a dict such as {{{name!r}: value}} from the step"
        )
    try:
        return step_result[name]
    except KeyError:
        raise KeyError(
            f"a hook asked for {name!r}, which the step's result does not contain "
            f"(it has {sorted(map(str, step_result))}); return it from the step"
        ) from None
