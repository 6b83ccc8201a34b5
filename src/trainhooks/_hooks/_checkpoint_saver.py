"""``CheckpointSaverHook``: save the session's state every N steps or seconds, with listeners.

The contract (docs/tf-compatibility.md, ``listener-contract.md``) is TensorFlow's: save at
session creation, then whenever the timer triggers after a step, and once more at a normal
end unless the last step was already saved; each save is wrapped in the listeners'
``before_save`` / ``after_save``; a truthy ``after_save`` asks training to stop after every
listener has been called. The hook never touches files itself: it calls a ``Saver``.

With ``async_save=True`` the save is a snapshot (``Saver.save_async``) and ``after_save``
moves: it runs at the first step boundary at which the checkpoint is durable (the trace is
in docs/hooks-and-listeners.md, "Asynchronous saving"); under ``torch.distributed``, at the
first sync point at which every rank's part of it has finished (docs/distributed.md).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

from trainhooks._exceptions import CheckpointLockedError
from trainhooks._session._hook import (
    HookSession,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
)
from trainhooks._session._hook_state import StatefulParts
from trainhooks._session._timer import Clock, SecondOrStepTimer
from trainhooks._store._background import wait_for
from trainhooks._store._remote._url import ObjectPath, checkpoint_location

if TYPE_CHECKING:
    from trainhooks._saver import Saver

__all__ = ["CheckpointSaverHook", "SupportsSave"]

_LOG = logging.getLogger("trainhooks")


class SupportsSave(Protocol):
    """What the hook needs of a saver: ``trainhooks.Saver`` or anything shaped like it."""

    def save(self, state: Any, directory: Any, step: int) -> Any: ...


class _SupportsAsyncSave(SupportsSave, Protocol):
    """What the hook needs of a saver with ``async_save=True`` (``trainhooks.Saver`` has it)."""

    max_pending: int

    def save_async(self, state: Any, directory: Any, step: int) -> Future[Any]: ...


class _PendingSave(NamedTuple):
    """A save whose ``after_save`` calls are still due: when ``future`` (None: nothing was
    written) is done. ``moot_stop``: the save at creation or at the end, where a stop
    request has nothing to stop."""

    step: int
    future: Future[Any] | None
    moot_stop: bool


class CheckpointSaverHook(SessionRunHook):
    """Saves ``session.state`` every ``save_steps`` steps or every ``save_secs`` seconds.

    Exactly one of ``save_secs`` / ``save_steps`` must be given (``ValueError`` otherwise).
    ``saver`` is a ``trainhooks.Saver`` (default: ``Saver(max_to_keep=max_to_keep)``,
    created at ``begin`` and closed in ``release()`` when the session closes). The hook
    takes the directory's lock in ``begin``, so a second process writing there fails at
    session creation (the error points to ``is_chief``); hooks of one process on the same
    directory share its writer. ``max_to_keep`` is for that default saver only (a saver
    you pass keeps its own setting). ``listeners`` are ``CheckpointSaverListener`` objects
    called around every save. ``save_secs`` are read from ``clock`` (default
    ``time.monotonic``; see ``SecondOrStepTimer``).

    TF arguments with no meaning here are accepted so TF code runs unchanged:
    ``checkpoint_basename`` (checkpoints are always ``ckpt-<step>`` directories, the names
    restore and the CLI look for; choose another with ``saver=Saver(basename=...)``),
    ``scaffold`` (no graph; giving both ``saver`` and ``scaffold`` is still TF's
    ``ValueError``) and ``save_graph_def`` (no graph to write).

    ``async_save=True`` blocks training only while the state is copied into host memory
    (``Saver.save_async``); the write goes on in the background, and each listener's
    ``after_save(session, S)`` runs at the first step boundary after the checkpoint of step
    ``S`` is durable (a stop it requests happens there), with saves still in the order
    ``before_save(S1), after_save(S1), before_save(S2)``: a save due while the previous one
    is still being written waits for it. ``end()`` runs once the final save is durable. A
    failed background write raises its typed error at the next step boundary.

    An exception raised by a listener propagates with its own type, carrying a note
    naming the listener, the method and the step; a checkpoint committed before it stays.

    Each checkpoint holds ``session.checkpoint_state``: the state plus the hooks' own
    states, among them this hook's, which is its listeners' states
    (``{"listeners": {name: listener.state_dict()}}`` for every listener that has
    ``state_dict()`` / ``load_state_dict()``). ``name`` keys this hook's state (default:
    the class name).
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike[str],
        save_secs: float | None = None,
        save_steps: int | None = None,
        saver: SupportsSave | None = None,
        checkpoint_basename: str = "model.ckpt",
        scaffold: Any = None,
        listeners: list[Any] | None = None,
        save_graph_def: bool = True,
        *,
        max_to_keep: int | None = 5,
        clock: Clock | None = None,
        name: str | None = None,
        async_save: bool = False,
    ) -> None:
        if (save_secs is None) == (save_steps is None):
            raise ValueError(
                "CheckpointSaverHook needs exactly one of save_secs and save_steps (got "
                f"save_secs={save_secs!r}, save_steps={save_steps!r}); e.g. "
                "CheckpointSaverHook(checkpoint_dir, save_steps=1000, listeners=[...])"
            )
        if saver is not None and scaffold is not None:
            raise ValueError("You cannot provide both saver and scaffold; pass only saver")
        if saver is not None and max_to_keep != 5:
            raise ValueError(
                f"max_to_keep={max_to_keep!r} applies to the hook's own saver only; pass it "
                "to the saver you give instead: saver=Saver(max_to_keep=...)"
            )
        if async_save and saver is not None and not callable(getattr(saver, "save_async", None)):
            raise TypeError(
                f"async_save=True needs a saver with save_async(), and {type(saver).__name__} "
                "has none; pass a trainhooks.Saver, or async_save=False"
            )
        self._checkpoint_dir = checkpoint_location(checkpoint_dir)
        self._timer = SecondOrStepTimer(every_secs=save_secs, every_steps=save_steps, clock=clock)
        self._listeners = list(listeners or [])
        self._saver: SupportsSave | None = saver
        self._owns_saver = saver is None
        self._owned_saver: Saver | None = None  # the one begin() created, until release()
        self._max_to_keep = max_to_keep
        self._last_saved_step: int | None = None
        self._listener_states = StatefulParts(self._listeners, "listener")
        self.name = name or type(self).__name__
        self._async = async_save
        self._pending: deque[_PendingSave] = deque()  # async saves awaiting after_save
        self._save_steps = save_steps
        self._due_step: int | None = None  # under torch.distributed: the agreed save

    @property
    def checkpoint_dir(self) -> Path | ObjectPath:
        """The directory (or object storage URL, as an ``ObjectPath``) saved into."""
        return self._checkpoint_dir

    @property
    def last_saved_step(self) -> int | None:
        """The step of the newest checkpoint this hook committed (or found unchanged on
        disk), None before the first; with ``async_save`` it moves once the checkpoint is
        durable, when its ``after_save`` runs. ``ResumeCheckHook`` follows saves through it."""
        return self._last_saved_step

    @property
    def max_to_keep(self) -> int | None:
        """How many checkpoints the hook's saver keeps (None: all, or a saver of unknown
        kind)."""
        keep = self._max_to_keep if self._owns_saver else getattr(self._saver, "max_to_keep", None)
        return keep or None

    @property
    def owns_saver(self) -> bool:
        """Whether the hook creates its own saver (no ``saver=`` was given)."""
        return self._owns_saver

    # -- the hook protocol --------------------------------------------------------------

    def begin(self) -> None:
        if self._owns_saver and self._saver is None:
            from trainhooks._saver import Saver  # lazy: the store pulls in numpy & co.

            self._saver = self._owned_saver = Saver(max_to_keep=self._max_to_keep)
        self._acquire_directory()
        for listener in self._listeners:
            _call_listener(listener, "begin", None)

    def after_create_session(self, session: HookSession, coord: Any) -> None:
        step = session.global_step
        # Saves of a session that a recoverable error ended finish first (their stop
        # requests are moot: the session is being re-created).
        self._deliver(session, until=len(self._pending), moot=True)
        # A stop asked for here is ignored, as in TF: there is no run to stop.
        self._save(session, step, moot_stop=True)
        self._timer.update_last_triggered_step(step)

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        session = run_context.session
        step = session.global_step
        stop = bool(self._pending) and self._deliver(session)
        if session.distributed is None:
            trigger = self._timer.should_trigger_for_step(step)
        else:  # decided at the sync point, before any hook ran (collective_save_due)
            trigger, self._due_step = self._due_step == step, None
        if trigger:
            self._timer.update_last_triggered_step(step)
            stop = self._save(session, step) or stop
        if stop:
            run_context.request_stop()

    def end(self, session: HookSession) -> None:
        last_step = session.global_step
        if last_step != self._timer.last_triggered_step():
            self._save(session, last_step, moot_stop=True)  # training is over: nothing to stop
        self._deliver(session, until=len(self._pending), moot=True)  # all durable now
        for listener in self._listeners:
            _call_listener(listener, "end", last_step, session)

    def release(self) -> None:
        """Finish the saves still in flight, then close the hook's own saver, which
        releases its directory lock. (After an exception, their ``after_save`` is not
        called, as no ``end`` is; a failure among them is logged, not raised over the
        exception that is ending the session.)"""
        pending = [p.future for p in self._pending if p.future is not None]
        self._pending.clear()
        owned, self._owned_saver = self._owned_saver, None
        try:
            if owned is not None:
                self._saver = None
                owned.close()  # waits for its saves (Ctrl-C there cancels them cleanly)
            wait_for(pending)  # a saver of the user's: its saves, from this session
        finally:
            for future in pending:
                if future.done() and not future.cancelled() and future.exception() is not None:
                    _LOG.error(
                        "the checkpoint save of a closing session failed: %s", future.exception()
                    )

    # -- under torch.distributed ---------------------------------------------------------

    @property
    def collective_save_steps(self) -> int | None:
        """The step interval of the saves (None for ``save_secs``): under
        ``torch.distributed`` the chief sends it to every rank at creation, so that every
        save step is a sync point."""
        return self._save_steps

    @property
    def collective_save_async(self) -> bool:
        """Whether the saves are background ones (``async_save``): under
        ``torch.distributed`` every rank then joins through ``save_async``."""
        return self._async

    def collective_save_due(self, session: HookSession, phase: str, step: int) -> bool:
        """Whether this hook saves in ``phase`` (``"create"``, ``"step"``, ``"end"``) at
        ``step``; asked on the chief of a ``torch.distributed`` job before the phase's
        hooks run, so that every rank joins the save (``_session/_collective.py``). With
        ``save_secs`` a save lands at the first sync point after the timer fired."""
        if phase == "step":
            due = self._timer.should_trigger_for_step(step)
            self._due_step = step if due else None
        else:
            due = phase == "create" or step != self._timer.last_triggered_step()
        return due and not self._is_unchanged_on_disk(session, step)

    # -- the state it carries across restarts --------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The listeners' states, saved inside each checkpoint (``_session/_hook_state.py``)."""
        return {"listeners": self._listener_states.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._listener_states.load_state_dict(state.get("listeners", {}))

    # -- saving -------------------------------------------------------------------------

    def _acquire_directory(self) -> None:
        """Take the directory's lock now: a second writer fails before any training."""
        acquire = getattr(self._saver, "acquire", None)
        if not callable(acquire):  # a saver of the user's own making: it locks when it can
            return
        try:
            acquire(self._checkpoint_dir)
        except CheckpointLockedError as exc:  # held by another process
            raise CheckpointLockedError(
                f"{exc} In a multi-process job only the chief saves checkpoints: create "
                "the session with is_chief=True on one process (e.g. rank 0) and "
                "is_chief=False on the others (MonitoredTrainingSession(is_chief=...)), "
                "and give CheckpointSaverHooks to chief_only_hooks.",
                path=exc.path,
            ) from None

    def _save(self, session: HookSession, step: int, moot_stop: bool = False) -> bool:
        """One save at ``step`` with its listener calls; True if a listener asked to stop
        (in async mode: a listener of an earlier save, delivered while making room)."""
        stop = self._make_room(session, step) if self._async else False
        _LOG.info("Calling checkpoint listeners before saving checkpoint %d...", step)
        for listener in self._listeners:
            _call_listener(listener, "before_save", step, session)
        if self._saver is None:
            raise RuntimeError("CheckpointSaverHook used without begin(); run it inside a session")
        future: Future[Any] | None = None
        if self._is_unchanged_on_disk(session, step):
            _LOG.info(
                "Checkpoint for step %d in %s is the one just restored; not rewriting it.",
                step,
                self._checkpoint_dir,
            )
        elif session.distributed is not None:
            _LOG.info("Saving checkpoints for %d into %s (all ranks).", step, self._checkpoint_dir)
            state = session.checkpoint_state
            if self._async:
                dist = session.distributed
                future = dist.save_async(state, self._checkpoint_dir, step, self._saver)
            else:
                session.distributed.save(state, self._checkpoint_dir, step, self._saver)
        elif self._async:
            _LOG.info("Snapshotting checkpoint %d for %s.", step, self._checkpoint_dir)
            saver = cast(_SupportsAsyncSave, self._saver)
            future = saver.save_async(session.checkpoint_state, self._checkpoint_dir, step)
        else:
            _LOG.info("Saving checkpoints for %d into %s.", step, self._checkpoint_dir)
            self._saver.save(session.checkpoint_state, self._checkpoint_dir, step)
        if self._async:
            self._pending.append(_PendingSave(step, future, moot_stop))
            return stop
        return self._after_save(session, step)

    def _make_room(self, session: HookSession, step: int) -> bool:
        """Before the save of ``step``: deliver what is durable, and wait (logged) until at
        most ``max_pending - 1`` saves are unfinished; True if a listener asked to stop."""
        max_pending: int = getattr(self._saver, "max_pending", 1)
        unfinished = [
            i for i, p in enumerate(self._pending) if p.future is not None and not p.future.done()
        ]
        excess = len(unfinished) - max_pending + 1
        if excess <= 0:
            return self._deliver(session)
        started = time.monotonic()
        stop = self._deliver(session, until=unfinished[excess - 1] + 1)
        _LOG.info(
            "The save of step %d waited %.3f s for the previous checkpoint to become durable "
            "(max_pending=%d): saves are due faster than the disk writes them.",
            step,
            time.monotonic() - started,
            max_pending,
        )
        return stop

    def _deliver(self, session: HookSession, until: int = 0, moot: bool = False) -> bool:
        """``after_save`` for the pending saves that are durable, oldest first, waiting for
        the first ``until`` of them; raises a failed save's error. True if a listener asked
        to stop (``moot``: ignore such requests)."""
        stop = False
        # under torch.distributed a save is delivered once every rank agreed it finished
        ready = _done if session.distributed is None else session.distributed.is_delivered
        while self._pending:
            oldest = self._pending[0]
            if oldest.future is not None and not ready(oldest.future):
                if until <= 0:
                    break
                wait_for([oldest.future])  # Ctrl-C here cancels the save cleanly
            self._pending.popleft()
            until -= 1
            if oldest.future is not None:
                oldest.future.result()  # a failed write raises here, typed
            if self._after_save(session, oldest.step) and not (moot or oldest.moot_stop):
                stop = True
        return stop

    def _after_save(self, session: HookSession, step: int) -> bool:
        """Every listener's ``after_save`` for the durable checkpoint of ``step`` (which is
        now the newest this hook saved)."""
        self._last_saved_step = step
        _LOG.info("Calling checkpoint listeners after saving checkpoint %d...", step)
        should_stop = False
        for listener in self._listeners:
            if _call_listener(listener, "after_save", step, session):
                _LOG.info(
                    "A CheckpointSaverListener requested that training be stopped. listener: %r",
                    listener,
                )
                should_stop = True
        return should_stop

    def _is_unchanged_on_disk(self, session: HookSession, step: int) -> bool:
        """Whether ``step``'s checkpoint in our directory is exactly the state in memory.

        True only right after a restore from this directory at this step with no step run
        since: writing it again would cost a full save and rotate an older checkpoint out
        of retention for nothing.
        """
        info = session.restored_checkpoint
        if info is None or info.step != step:
            return False
        if isinstance(info.path, ObjectPath) or isinstance(self._checkpoint_dir, ObjectPath):
            return str(info.path.parent) == str(self._checkpoint_dir)
        path = Path(info.path)
        return path.is_dir() and _same_directory(path.parent, self._checkpoint_dir)


def _done(future: Future[Any]) -> bool:
    return future.done()


def _same_directory(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _call_listener(
    listener: Any, method: str, step: int | None, session: HookSession | None = None
) -> Any:
    """Call one listener method; an exception keeps its type and gains a note saying where."""
    try:
        if method == "begin":
            return listener.begin()
        return getattr(listener, method)(session, step)
    except Exception as exc:
        where = f" at step {step}" if step is not None else ""
        _add_note(
            exc,
            f"raised by checkpoint listener {type(listener).__qualname__}.{method}(){where}; "
            "checkpoints committed before it are kept",
        )
        raise


def _add_note(exc: BaseException, note: str) -> None:
    if hasattr(exc, "add_note"):  # Python >= 3.11 (PEP 678)
        exc.add_note(note)
    else:  # 3.10: same attribute, not shown by the traceback printer
        exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]
