"""``MonitoredSession``: a training loop driven by hooks (the per-step machinery).

The session owns the lifecycle documented in ``_hook.py``: hooks ``begin``, the state is
restored from ``checkpoint_dir`` (if a checkpoint is there), hooks see
``after_create_session``, each ``run(fn, ...)`` wraps the user's step in ``before_run`` /
``after_run``, and ``end`` runs only when the session closes normally. It knows nothing of
file formats: restoring goes through ``Saver``.

Per-step cost is what the design optimises: the call lists are built once
(``HookCalls.build``), a step with no hook asking for results builds one
``SessionRunContext`` and one ``SessionRunValues``, and the global step is a plain int.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from trainhooks._exceptions import RollbackRequested
from trainhooks._session import _restore as restoring
from trainhooks._session._collective import (
    DEFAULT_SYNC_EVERY_STEPS,
    DistributedSession,
    SyncedCoordinator,
    detect,
)
from trainhooks._session._dispatch import (
    Coordinator,
    HookCalls,
    as_hook_list,
    call_after_run_with_results,
    call_before_run,
    exception_types,
    plain_run_values,
    release_all,
)
from trainhooks._session._hook import SessionRunArgs, SessionRunContext
from trainhooks._session._hook_state import SessionHookStates, refuse_reserved_key
from trainhooks._session._misuse import check_arguments, nested_run_error, run_after_stop_error
from trainhooks._session._preemption import PreemptionSignals, log_preemption, preempted
from trainhooks._session._step_context import StepContext, StopRequested
from trainhooks._store._background import unfinished_saves_into, wait_for
from trainhooks._store._remote._url import ObjectPath, checkpoint_location

if TYPE_CHECKING:
    from trainhooks._store._info import CheckpointInfo

__all__ = ["MonitoredSession", "StepContext"]

_LOG = logging.getLogger("trainhooks")
_NO_ARGS = SessionRunArgs()
_IN_STEP = "a hook's before_run/after_run, a listener, or the step function itself"


class MonitoredSession:
    """A session that runs hooks around each step, restores state and recovers from errors.

    ``state`` (a mapping of names to model, optimizer, arrays, ...) is what checkpoints hold;
    it is restored in place from the latest checkpoint in ``checkpoint_dir`` at creation,
    and ``global_step`` is set to that checkpoint's step (0 when there is none).
    ``recoverable_errors`` is a tuple of exception types: when a step (or a hook) raises
    one, the session is re-created (state restored from the latest checkpoint, every
    hook's ``after_create_session`` again) and the same ``run`` call is retried — TF's
    behaviour for preemption errors. Without a checkpoint to restore, state and step are
    kept as they were.

    ``preemption_signals`` (default: none; ``MonitoredTrainingSession`` handles SIGTERM
    when it has a ``checkpoint_dir``) are handled from creation until close, in the main
    thread only: a signal only sets ``preempted`` and makes ``should_stop()`` true; at the
    next step boundary (the end of the running step, or the next ``run``) the session
    closes normally (every hook's ``end``, so the saver hook saves with its listeners) and
    raises ``Preempted``, a ``SystemExit`` with status ``EXIT_PREEMPTED``. A loop that
    stops on its own after the signal gets the same from ``close()`` / the ``with``
    block. A hook's ``after_run`` may raise ``RollbackRequested`` to undo a step: the
    session restores the checkpoint it names and skips the runs of ``skipped_steps`` (see
    docs/preemption.md).

    Under ``torch.distributed`` (initialised, world size > 1) every rank creates the
    session with the same code: the ranks restore the same checkpoint, join the chief's
    saves, and agree on stops, preemption, rollbacks and recoverable errors at sync
    points, at least every ``sync_every_steps`` steps (``_collective.py``,
    ``_dist_recovery.py``, docs/distributed.md).

    TF's ``session_creator`` has no counterpart (there is no graph to initialise): pass
    ``state=`` and ``checkpoint_dir=`` directly. ``stop_grace_period_secs`` is accepted
    and ignored (no queue-runner threads to join).
    """

    def __init__(
        self,
        session_creator: None = None,
        hooks: Iterable[object] | None = None,
        stop_grace_period_secs: float = 120,
        *,
        state: MutableMapping[str, Any] | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        steps_per_run: int = 1,
        recoverable_errors: Iterable[type[BaseException]] = (),
        preemption_signals: Iterable[int] = (),
        sync_every_steps: int = DEFAULT_SYNC_EVERY_STEPS,
    ) -> None:
        check_arguments(session_creator, steps_per_run)
        self.state: MutableMapping[str, Any] = {} if state is None else state
        refuse_reserved_key(self.state)
        self.global_step: int = 0
        self.steps_per_run = steps_per_run
        self._checkpoint_dir = (
            None if checkpoint_dir is None else checkpoint_location(checkpoint_dir)
        )
        self._recoverable = exception_types(recoverable_errors)
        self._hooks = as_hook_list(hooks)
        self._hook_states = SessionHookStates(self._hooks)
        self._calls = HookCalls.build(self._hooks)
        self._after_run = tuple(call for _, call in self._calls.after_run)
        self._sync = detect(sync_every_steps)  # None unless torch.distributed, world > 1
        self._coord = Coordinator() if self._sync is None else SyncedCoordinator()
        if self._sync is not None:
            self._sync.attach(self._hooks)
        self._closed = False
        self._restored: CheckpointInfo | None = None  # the last restore, if any
        self._state_changed = False  # a step ran since the last restore/creation
        self._busy: str | None = None  # what hook code or step is running, for nested runs
        self._skipped: frozenset[int] = frozenset()
        self._preempted = False
        self._preempt_signal: int | None = None
        self._signals = PreemptionSignals(preemption_signals, self._on_preemption)
        try:
            self._signals.install()  # first: a signal during the restore is not lost
            for begin in self._calls.begin:
                begin()
            self._create_with_recovery()
        except BaseException:
            try:
                with contextlib.suppress(Exception):  # the original error is the one to report
                    self._release_hooks()
            finally:
                self._signals.restore()
            raise

    # -- the public surface (``HookSession`` is the part hooks may use) -----------------

    @property
    def checkpoint_dir(self) -> Path | ObjectPath | None:
        """The directory state was restored from (and the default saver writes), if any."""
        return self._checkpoint_dir

    @property
    def checkpoint_state(self) -> MutableMapping[str, Any]:
        """What a checkpoint holds: ``state`` plus the hooks' and listeners' own states
        (one reserved entry, ``"__trainhooks__"``; see ``_hook_state.py``)."""
        return self._hook_states.around(self.state)

    @property
    def distributed(self) -> DistributedSession | None:
        """This rank's place in a ``torch.distributed`` job (None in one process): ``rank``,
        ``world_size``, ``is_chief``, ``sync_every_steps``, and ``save``, the collective
        save a chief's saver hook calls (see docs/distributed.md)."""
        return self._sync

    @property
    def restored_checkpoint(self) -> CheckpointInfo | None:
        """The checkpoint ``state`` was restored from, while no step has run since; else None.

        A hook can skip work the checkpoint on disk already holds: ``CheckpointSaverHook``
        does not rewrite it (see docs/deviations.md).
        """
        return None if self._state_changed else self._restored

    def request_stop(self) -> None:
        """Ask the session to stop: ``should_stop()`` becomes true, no further step runs.

        A step already running completes, with its ``after_run`` calls.
        """
        self._coord.stop = True

    @property
    def preempted(self) -> bool:
        """True once a preemption was requested (a preemption signal or
        ``request_preemption()``); the session then saves, ends and raises ``Preempted``
        at the next step boundary."""
        return self._preempted

    def request_preemption(self) -> None:
        """Do what a preemption signal does: finish the running step, save, end, stop.

        Only sets a flag, so it is safe from a signal handler or another thread: the way
        to handle signals when the session lives outside the main thread.
        """
        self._on_preemption(None)

    @property
    def skipped_steps(self) -> frozenset[int]:
        """Global steps whose runs this session skips, because their data made it roll back.

        A ``run`` that would end at one of these steps calls neither the step function
        nor any hook: it advances ``global_step`` and returns None. A data pipeline that
        would rather not load such a batch checks
        ``sess.global_step + sess.steps_per_run in sess.skipped_steps`` first.
        """
        return self._skipped

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` as one step with every hook; return its result.

        ``global_step`` advances by ``steps_per_run`` after the step and before
        ``after_run``. Results named by a hook's ``SessionRunArgs`` are picked from the
        mapping ``fn`` returns; ``feed_dict`` entries become extra keyword arguments.
        """
        while True:
            try:
                return self._run_with_hooks(fn, args, kwargs)
            except self._recoverable as exc:
                self._recover(exc)

    def run_step_fn(self, step_fn: Callable[[StepContext], Any]) -> Any:
        """Call ``step_fn(step_context)`` (TF's ``run_step_fn``) with recovery as in ``run``.

        The step function calls ``step_context.run_with_hooks(fn, ...)`` for hooked steps
        and may do other work around them; ``step_context.request_stop()`` ends the loop.
        Returns what ``step_fn`` returns, or None when it requested a stop.
        """
        if self._busy is not None:
            self._raise_nested_run("run_step_fn()")
        while True:
            try:
                self._raise_if_stopped()
                self._state_changed = True
                return step_fn(StepContext(self))
            except StopRequested:
                self._coord.stop = True
                return None
            except self._recoverable as exc:
                self._recover(exc)

    def should_stop(self) -> bool:
        """True once a hook or the step asked to stop, or the session is closed."""
        return self._coord.stop

    def close(self) -> None:
        """Close normally: every hook's ``end`` (final save included), then release resources.

        Closing twice is a no-op.
        """
        self._close(normal=True)

    def __enter__(self) -> MonitoredSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        # As in TF, running out of data (StopIteration) ends training normally: hooks'
        # ``end`` runs and the exception is swallowed. Any other exception skips ``end``.
        normal = exc_type is None or issubclass(exc_type, StopIteration)
        self._close(normal=normal)
        return exc_type is not None and normal

    # -- internals ----------------------------------------------------------------------

    def _run_with_hooks(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """One step: every ``before_run``, ``fn``, the global step, every ``after_run``."""
        if self._busy is not None:
            self._raise_nested_run()
        if self._coord.stop:
            self._raise_if_stopped()
        if self._skipped and self.global_step + self.steps_per_run in self._skipped:
            return self._skip_run()
        rollback: RollbackRequested | None = None
        failure: Exception | None = None
        self._busy = _IN_STEP
        try:  # kept in one function: this is the per-step path
            context = SessionRunContext(_NO_ARGS, self)
            requests: dict[int, SessionRunArgs] | None = None
            if self._calls.before_run:  # only then may a hook ask for results or feed
                requests, kwargs = call_before_run(self._calls, self._hooks, context, kwargs)
            result = fn(*args, **kwargs)
            self.global_step += self.steps_per_run
            self._state_changed = True
            sync = self._sync
            if sync is not None and self.global_step >= sync.next_step:
                # may join the chief's save; a rollback agreed now undoes this step
                rollback = sync.at_step(self, self.global_step)
            try:
                if rollback is not None:
                    pass  # the step is undone: no hook sees it
                elif requests:
                    call_after_run_with_results(self._calls, context, requests, result)
                elif self._after_run:  # the common case, kept inline: nobody asked for results
                    values = plain_run_values(result)
                    for after_run in self._after_run:
                        after_run(context, values)
            except RollbackRequested as request:
                rollback = request
            except Exception as exc:
                if sync is None or sync.synced_at is None:
                    raise
                failure = exc  # at a sync point: raised on every rank by after_sync
        finally:
            self._busy = None
        if rollback is not None:
            self._roll_back(rollback)  # under torch.distributed: once the ranks agreed
        elif context._stop_requested:
            self._coord.stop = True
        if sync is not None and sync.synced_at is not None:
            # stops and rollbacks asked for at a sync point: agreed at once
            agreed = sync.after_sync(self, failure)
            if agreed is not None:
                self._roll_back(agreed)
        if self._preempted:  # the step boundary: save, end, raise Preempted
            self._end_preempted()
        return result

    def _raise_nested_run(self, what: str = "session.run()") -> None:
        raise nested_run_error(what, self._busy, self.global_step)

    def _raise_if_stopped(self) -> None:
        if self._closed:
            raise RuntimeError("run called on a closed session; create a new session")
        if self._preempted:  # a step boundary: save, end, raise Preempted
            self._end_preempted()
        if self._coord.stop:
            raise run_after_stop_error(self.global_step)

    def _create_with_recovery(self, step: int | None = None) -> None:
        while True:
            try:
                self._create_session(step)
                return
            except self._recoverable as exc:
                if self._sync is not None:  # only an error every rank raised at this point
                    self._sync.recovery.check_recoverable(exc, self._sync.rank, self.global_step)
                _LOG.warning("recoverable error while creating the session: %r; retrying", exc)

    def _create_session(self, step: int | None = None) -> None:
        """Restore (the latest checkpoint, or ``step``'s) and call ``after_create_session``."""
        self._coord.clear_stop()
        if self._preempted:
            self._coord.halt()
        if self._checkpoint_dir is not None:
            self._restore(self._checkpoint_dir, step)
        self._state_changed = False
        self._busy = "a hook's after_create_session or a listener it calls"
        try:
            if self._sync is None:
                for after_create_session in self._calls.after_create_session:
                    after_create_session(self, self._coord)
            else:
                self._sync.at_creation(self)
                failure: Exception | None = None
                try:
                    for after_create_session in self._calls.after_create_session:
                        after_create_session(self, self._coord)
                except Exception as exc:  # raised on every rank by after_creation
                    failure = exc
                self._sync.after_creation(self, failure)
        finally:
            self._busy = None

    def _restore(self, directory: Path | ObjectPath, step: int | None) -> None:
        info = restoring.restore_latest(self, directory, step)
        if info is None:
            return
        self.global_step = info.step
        self._restored = info
        _LOG.info("restored global step %d from %s", info.step, info.path)

    def _skip_run(self) -> None:
        self.global_step += self.steps_per_run
        self._state_changed = True
        _LOG.info("skipped the run of step %d: its data made a step roll back", self.global_step)

    def _roll_back(self, request: RollbackRequested) -> None:
        """Undo the step just run: restore ``request.step``'s checkpoint, skip its data.

        Under ``torch.distributed`` a hook's request is only noted: the ranks agree at the
        next sync point, and every rank then undoes the steps since (``_dist_recovery.py``).
        """
        sync = self._sync
        if sync is not None and not sync.recovery.is_agreed(request):
            sync.note_rollback(request)
            return
        restoring.check_rollback(self, request)
        self._skipped = self._skipped | frozenset(request.skip_steps)
        restoring.log_rollback(self, request)
        # A saver hook's background save of that step may still be writing: wait for the
        # saves in flight into the directory (Ctrl-C cancels them), or it is not there yet.
        # (Under torch.distributed the sync point that agreed on it waited for them.)
        assert self._checkpoint_dir is not None  # check_rollback refused a session without
        wait_for(unfinished_saves_into(self._checkpoint_dir))
        self._create_with_recovery(request.step)

    def _end_preempted(self) -> None:
        """Close normally at a step boundary after a preemption request: raises Preempted."""
        log_preemption(self._preempt_signal, self.global_step)
        self._close(normal=True)

    def _on_preemption(self, signum: int | None) -> None:
        """The signal handler's whole work: note the request (no I/O, no logging)."""
        if self._sync is not None:  # every rank acts on it at the next sync point
            self._sync.note_preemption(signum)
            return
        self._agree_preemption(signum)

    def _agree_preemption(self, signum: int | None) -> None:
        """Act on a preemption request at the next step boundary (at once in one process;
        under torch.distributed once the ranks agreed on it)."""
        if not self._preempted:
            self._preempt_signal = signum
            self._preempted = True
        self._coord.halt()

    def _recover(self, exc: BaseException) -> None:
        if self._sync is not None:  # only an error every rank raised at a sync point
            self._sync.recovery.check_recoverable(exc, self._sync.rank, self.global_step)
        restoring.log_recovery(self, exc)
        self._create_with_recovery()

    def _close(self, *, normal: bool) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if normal:
                self._busy = "a hook's end or a listener it calls"
                if self._sync is not None:
                    self._sync.at_end(self)  # the chief's final save is collective
                for end in self._calls.end:
                    end(self)
        finally:
            self._busy = None
            self._coord.halt()
            try:
                if self._sync is not None:
                    self._sync.release()  # this rank's background saves: every rank joined
                self._release_hooks()
            finally:
                self._signals.restore()  # after the final save: a second signal waits
        if normal and self._preempted:
            raise preempted(self._preempt_signal, self.global_step)

    def _release_hooks(self) -> None:
        """Call every hook's ``release()`` whatever happened; then raise the first error."""
        release_all(self._calls.release)
