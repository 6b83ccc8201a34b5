"""Per-event call lists, built once per session, and the ``coord`` handed to hooks.

Why call lists: a training step may take microseconds, so the session must not ask every
hook about every event on every step. ``HookCalls.build`` looks at each hook once and keeps
only the bound methods its class really overrides; a hook that only cares about
``after_run`` costs one call per step and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from trainhooks._session._hook import (
    SessionRunArgs,
    SessionRunContext,
    SessionRunValues,
    overrides,
    select_fetches,
)

__all__ = [
    "Coordinator",
    "HookCalls",
    "as_hook_list",
    "call_after_run_with_results",
    "call_before_run",
    "exception_types",
    "plain_run_values",
    "release_all",
]


def _implements(hook: object, method: str) -> bool:
    # ``overrides`` answers for SessionRunHook subclasses; duck-typed hooks (not subclassing
    # it) are asked whether they have the method at all.
    return overrides(hook, method) and callable(getattr(hook, method, None))


@dataclass(frozen=True)
class HookCalls:
    """The bound methods to call for each event, in hook-list order.

    ``before_run`` and ``after_run`` pair each method with its hook's index in the list so
    that the results a hook asked for in ``before_run`` reach that hook's ``after_run``.
    """

    begin: tuple[Callable[[], None], ...]
    after_create_session: tuple[Callable[[Any, Any], None], ...]
    before_run: tuple[tuple[int, Callable[[Any], Any]], ...]
    after_run: tuple[tuple[int, Callable[[Any, Any], None]], ...]
    end: tuple[Callable[[Any], None], ...]
    release: tuple[Callable[[], None], ...]

    @classmethod
    def build(cls, hooks: Sequence[object]) -> HookCalls:
        """Inspect every hook once and keep the methods it overrides."""

        def calls(method: str) -> tuple[Any, ...]:
            return tuple(getattr(h, method) for h in hooks if _implements(h, method))

        def indexed(method: str) -> tuple[tuple[int, Any], ...]:
            return tuple(
                (i, getattr(h, method)) for i, h in enumerate(hooks) if _implements(h, method)
            )

        return cls(
            begin=calls("begin"),
            after_create_session=calls("after_create_session"),
            before_run=indexed("before_run"),
            after_run=indexed("after_run"),
            end=calls("end"),
            release=calls("release"),
        )


class Coordinator:
    """The ``coord`` argument of ``after_create_session``: a stop flag for the session.

    TF passes a ``tf.train.Coordinator`` (threads, join, exception re-raising); here only
    what a hook can use without threads is kept: ``request_stop()`` and ``should_stop()``.
    A stop requested here makes the session's ``should_stop()`` true before any step runs.
    """

    __slots__ = ("stop",)

    def __init__(self) -> None:
        self.stop = False

    def request_stop(self, ex: BaseException | None = None) -> None:
        """Ask the session to stop; ``ex`` is accepted for TF compatibility and not raised."""
        self.stop = True

    def should_stop(self) -> bool:
        """Whether a stop was requested."""
        return self.stop

    def halt(self) -> None:
        """Stop now, without asking anyone (the session closes or was preempted)."""
        self.stop = True

    def clear_stop(self) -> None:
        """Forget a stop request (used when a recoverable error re-creates the session)."""
        self.stop = False


def as_hook_list(hooks: Iterable[object] | None) -> list[object]:
    """Copy a user's hook iterable (None means no hooks), rejecting a lone hook by mistake."""
    if hooks is None:
        return []
    if not isinstance(hooks, Iterable):
        raise TypeError(
            f"hooks must be a list of hooks, got a single {type(hooks).__name__}; "
            f"wrap it in a list: hooks=[{type(hooks).__name__}(...)]"
        )
    return list(hooks)


def plain_run_values(result: Any) -> SessionRunValues:
    """``SessionRunValues`` for a hook that asked for nothing: only the step's result."""
    return SessionRunValues(None, None, None, result)


def call_before_run(
    calls: HookCalls, hooks: Sequence[object], context: SessionRunContext, kwargs: dict[str, Any]
) -> tuple[dict[int, SessionRunArgs], dict[str, Any]]:
    """Every ``before_run``: the requests by hook index, and the step's keyword arguments
    with every hook's ``feed_dict`` added (an argument fed twice is an error)."""
    requests: dict[int, SessionRunArgs] = {}
    feeds: dict[str, Any] = {}
    for index, before_run in calls.before_run:
        request = before_run(context)
        if request is None:
            continue
        requests[index] = request
        if request.feed_dict:
            clash = (feeds.keys() | kwargs.keys()) & request.feed_dict.keys()
            if clash:
                raise RuntimeError(
                    f"hook {type(hooks[index]).__name__} feeds {sorted(clash)}, which "
                    f"another hook or the run call already passes; feed each argument once"
                )
            feeds.update(request.feed_dict)
    return requests, ({**kwargs, **feeds} if feeds else kwargs)


def call_after_run_with_results(
    calls: HookCalls, context: SessionRunContext, requests: dict[int, SessionRunArgs], result: Any
) -> None:
    """Every ``after_run``; a hook whose ``before_run`` asked for results gets those."""
    values = plain_run_values(result)
    for index, after_run in calls.after_run:
        request = requests.get(index)
        if request is not None:
            results = select_fetches(request.fetches, result)
            after_run(context, SessionRunValues(results, step_result=result))
        else:
            after_run(context, values)


def exception_types(types: Iterable[type[BaseException]]) -> tuple[type[BaseException], ...]:
    """``recoverable_errors`` as a tuple of exception classes (a lone class is accepted)."""
    result: tuple[Any, ...] = (types,) if isinstance(types, type) else tuple(types)
    for t in result:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise TypeError(f"recoverable_errors must hold exception classes, got {t!r}")
    return result


def release_all(releases: Sequence[Callable[[], None]]) -> None:
    """Call every hook's ``release()`` whatever happened; then raise the first error."""
    errors: list[BaseException] = []
    for release in releases:
        try:
            release()
        except Exception as exc:  # release the others first, then report
            errors.append(exc)
    if errors:
        raise errors[0]
