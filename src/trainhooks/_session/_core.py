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

from trainhooks._exceptions import CheckpointNotFoundError
from trainhooks._session._dispatch import (
    Coordinator,
    HookCalls,
    as_hook_list,
    plain_run_values,
)
from trainhooks._session._hook import (
    SessionRunArgs,
    SessionRunContext,
    SessionRunValues,
    select_fetches,
)
from trainhooks._store._remote._url import ObjectPath, checkpoint_location

if TYPE_CHECKING:
    from trainhooks._store._info import CheckpointInfo

__all__ = ["MonitoredSession", "StepContext"]

_LOG = logging.getLogger("trainhooks")
_NO_ARGS = SessionRunArgs()


class _StopRequested(StopIteration):
    """Raised by ``StepContext.request_stop`` to leave the step function (TF's behaviour)."""


class StepContext:
    """What ``run_step_fn`` passes to the step function (TF's ``StepContext``).

    ``session`` is the monitored session (its ``state`` and ``global_step``);
    ``run_with_hooks(fn, ...)`` runs one hooked step; ``request_stop()`` leaves the step
    function at once and makes ``should_stop()`` true.
    """

    __slots__ = ("_session",)

    def __init__(self, session: MonitoredSession) -> None:
        self._session = session

    @property
    def session(self) -> MonitoredSession:
        return self._session

    def run_with_hooks(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` as one step with every hook's ``before_run`` / ``after_run``."""
        return self._session._run_with_hooks(fn, args, kwargs)

    def request_stop(self) -> None:
        """Stop the loop: raises out of the step function; ``run_step_fn`` returns None."""
        raise _StopRequested("step_fn requested a stop")


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
    ) -> None:
        if session_creator is not None:
            raise TypeError(
                "trainhooks sessions have no session_creator (there is no graph to "
                "initialise); pass state=... and checkpoint_dir=... to the session instead"
            )
        if not isinstance(steps_per_run, int) or steps_per_run < 1:
            raise ValueError(f"steps_per_run must be a positive int, got {steps_per_run!r}")
        self.state: MutableMapping[str, Any] = {} if state is None else state
        self.global_step: int = 0
        self.steps_per_run = steps_per_run
        self._checkpoint_dir = (
            None if checkpoint_dir is None else checkpoint_location(checkpoint_dir)
        )
        self._recoverable = _exception_types(recoverable_errors)
        self._hooks = as_hook_list(hooks)
        self._calls = HookCalls.build(self._hooks)
        self._after_run = tuple(call for _, call in self._calls.after_run)
        self._coord = Coordinator()
        self._closed = False
        self._restored: CheckpointInfo | None = None  # the last restore, if any
        self._state_changed = False  # a step ran since the last restore/creation
        try:
            for begin in self._calls.begin:
                begin()
            self._create_with_recovery()
        except BaseException:
            with contextlib.suppress(Exception):  # the original error is the one to report
                self._release_hooks()
            raise

    # -- the public surface (``HookSession`` is the part hooks may use) -----------------

    @property
    def checkpoint_dir(self) -> Path | ObjectPath | None:
        """The directory state was restored from (and the default saver writes), if any."""
        return self._checkpoint_dir

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
        while True:
            try:
                self._raise_if_stopped()
                self._state_changed = True
                return step_fn(StepContext(self))
            except _StopRequested:
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
        if self._coord.stop:
            self._raise_if_stopped()
        context = SessionRunContext(_NO_ARGS, self)
        requests: dict[int, SessionRunArgs] | None = None
        if self._calls.before_run:  # only then may a hook ask for results or feed
            requests, kwargs = self._call_before_run(context, kwargs)
        result = fn(*args, **kwargs)
        self.global_step += self.steps_per_run
        self._state_changed = True
        if requests:
            self._call_after_run_with_results(context, requests, result)
        elif self._after_run:  # the common case, kept inline: nobody asked for results
            values = plain_run_values(result)
            for after_run in self._after_run:
                after_run(context, values)
        if context._stop_requested:
            self._coord.stop = True
        return result

    def _call_before_run(
        self, context: SessionRunContext, kwargs: dict[str, Any]
    ) -> tuple[dict[int, SessionRunArgs], dict[str, Any]]:
        requests: dict[int, SessionRunArgs] = {}
        feeds: dict[str, Any] = {}
        for index, before_run in self._calls.before_run:
            request = before_run(context)
            if request is None:
                continue
            requests[index] = request
            if request.feed_dict:
                clash = (feeds.keys() | kwargs.keys()) & request.feed_dict.keys()
                if clash:
                    raise RuntimeError(
                        f"hook {type(self._hooks[index]).__name__} feeds {sorted(clash)}, which "
                        f"another hook or the run call already passes; feed each argument once"
                    )
                feeds.update(request.feed_dict)
        return requests, ({**kwargs, **feeds} if feeds else kwargs)

    def _call_after_run_with_results(
        self, context: SessionRunContext, requests: dict[int, SessionRunArgs], result: Any
    ) -> None:
        """Every ``after_run``; a hook whose ``before_run`` asked for results gets those."""
        values = plain_run_values(result)
        for index, after_run in self._calls.after_run:
            request = requests.get(index)
            if request is not None:
                results = select_fetches(request.fetches, result)
                after_run(context, SessionRunValues(results, step_result=result))
            else:
                after_run(context, values)

    def _raise_if_stopped(self) -> None:
        if self._closed:
            raise RuntimeError("run called on a closed session; create a new session")
        if self._coord.stop:
            raise RuntimeError(
                "run called even after should_stop() became true (a hook or the step "
                f"requested a stop at global step {self.global_step}); loop with "
                "`while not sess.should_stop(): sess.run(...)`"
            )

    def _create_with_recovery(self) -> None:
        while True:
            try:
                self._create_session()
                return
            except self._recoverable as exc:
                _LOG.warning("recoverable error while creating the session: %r; retrying", exc)

    def _create_session(self) -> None:
        """Restore (if possible) and run every hook's ``after_create_session``."""
        self._coord.clear_stop()
        if self._checkpoint_dir is not None:
            self._restore_latest(self._checkpoint_dir)
        self._state_changed = False
        for after_create_session in self._calls.after_create_session:
            after_create_session(self, self._coord)

    def _restore_latest(self, directory: Path | ObjectPath) -> None:
        from trainhooks._saver import Saver  # lazy: keeps importing the session cheap

        try:
            with Saver(max_to_keep=None) as saver:
                info = saver.restore(self.state, directory)
        except CheckpointNotFoundError:
            _LOG.info("no checkpoint in %s; starting at step %d", directory, self.global_step)
            return
        self.global_step = info.step
        self._restored = info
        _LOG.info("restored global step %d from %s", info.step, info.path)

    def _recover(self, exc: BaseException) -> None:
        _LOG.warning(
            "recoverable error at global step %d: %r; re-creating the session from the "
            "latest checkpoint in %s",
            self.global_step,
            exc,
            self._checkpoint_dir,
        )
        self._create_with_recovery()

    def _close(self, *, normal: bool) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if normal:
                for end in self._calls.end:
                    end(self)
        finally:
            self._coord.stop = True
            self._release_hooks()

    def _release_hooks(self) -> None:
        """Call every hook's ``release()`` whatever happened; then raise the first error."""
        errors: list[BaseException] = []
        for release in self._calls.release:
            try:
                release()
            except Exception as exc:  # release the others first, then report
                errors.append(exc)
        if errors:
            raise errors[0]


def _exception_types(types: Iterable[type[BaseException]]) -> tuple[type[BaseException], ...]:
    # a lone class is accepted too; every item is checked below
    result: tuple[Any, ...] = (types,) if isinstance(types, type) else tuple(types)
    for t in result:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise TypeError(f"recoverable_errors must hold exception classes, got {t!r}")
    return result
