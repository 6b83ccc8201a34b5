"""``CheckpointSaverHook``: save the session's state every N steps or seconds, with listeners.

The contract (docs/tf-compatibility.md, ``listener-contract.md``) is TensorFlow's: save at
session creation, then whenever the timer triggers after a step, and once more at a normal
end unless the last step was already saved; each save is wrapped in the listeners'
``before_save`` / ``after_save``; a truthy ``after_save`` asks training to stop after every
listener has been called. The hook never touches files itself: it calls a ``Saver``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from trainhooks._exceptions import CheckpointLockedError
from trainhooks._session._hook import (
    HookSession,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
)
from trainhooks._session._hook_state import StatefulParts
from trainhooks._session._timer import Clock, SecondOrStepTimer
from trainhooks._store._remote._url import ObjectPath, checkpoint_location

if TYPE_CHECKING:
    from trainhooks._saver import Saver

__all__ = ["CheckpointSaverHook", "SupportsSave"]

_LOG = logging.getLogger("trainhooks")


class SupportsSave(Protocol):
    """What the hook needs of a saver: ``trainhooks.Saver`` or anything shaped like it."""

    def save(self, state: Any, directory: Any, step: int) -> Any: ...


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

    @property
    def checkpoint_dir(self) -> Path | ObjectPath:
        """The directory (or object storage URL, as an ``ObjectPath``) saved into."""
        return self._checkpoint_dir

    @property
    def last_saved_step(self) -> int | None:
        """The step of the newest checkpoint this hook committed (or found unchanged on
        disk), None before the first; ``ResumeCheckHook`` follows saves through it."""
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
        # A stop asked for here is ignored, as in TF: there is no run to stop.
        self._save(session, step)
        self._timer.update_last_triggered_step(step)

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        session = run_context.session
        step = session.global_step
        if self._timer.should_trigger_for_step(step):
            self._timer.update_last_triggered_step(step)
            if self._save(session, step):
                run_context.request_stop()

    def end(self, session: HookSession) -> None:
        last_step = session.global_step
        if last_step != self._timer.last_triggered_step():
            self._save(session, last_step)  # a stop request here is moot: training is over
        for listener in self._listeners:
            _call_listener(listener, "end", last_step, session)

    def release(self) -> None:
        """Close the hook's own saver, which releases its directory lock."""
        owned, self._owned_saver = self._owned_saver, None
        if owned is not None:
            self._saver = None
            owned.close()

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

    def _save(self, session: HookSession, step: int) -> bool:
        """One save at ``step`` with its listener calls; True if a listener asked to stop."""
        _LOG.info("Calling checkpoint listeners before saving checkpoint %d...", step)
        for listener in self._listeners:
            _call_listener(listener, "before_save", step, session)
        if self._is_unchanged_on_disk(session, step):
            _LOG.info(
                "Checkpoint for step %d in %s is the one just restored; not rewriting it.",
                step,
                self._checkpoint_dir,
            )
        else:
            _LOG.info("Saving checkpoints for %d into %s.", step, self._checkpoint_dir)
            if self._saver is None:
                raise RuntimeError(
                    "CheckpointSaverHook used without begin(); run it inside a session"
                )
            self._saver.save(session.checkpoint_state, self._checkpoint_dir, step)
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
