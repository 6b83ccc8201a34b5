"""``StepArgsHook``: feed extra keyword arguments to every step (TF's ``FeedFnHook``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from trainhooks._session._hook import SessionRunArgs, SessionRunContext, SessionRunHook

__all__ = ["FeedFnHook", "StepArgsHook"]


class StepArgsHook(SessionRunHook):
    """Before each run, calls ``args_fn()`` and passes its mapping to the step as kwargs.

    TF's ``FeedFnHook(feed_fn)`` returned ``SessionRunArgs(fetches=None,
    feed_dict=feed_fn())``; here ``feed_dict`` entries become keyword arguments of the
    step function, so ``args_fn`` returns e.g. ``{"batch": next(loader)}``. Two hooks (or
    a hook and the caller) feeding the same name is an error raised by the session, as
    TF raises for a tensor fed twice.
    """

    def __init__(self, args_fn: Callable[[], Mapping[str, Any]]) -> None:
        if not callable(args_fn):
            raise TypeError(f"StepArgsHook needs a function, got {type(args_fn).__name__}")
        self._args_fn = args_fn

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs:
        feed = self._args_fn()
        if not isinstance(feed, Mapping):
            raise TypeError(
                "StepArgsHook: args_fn must return a mapping of keyword arguments for the "
                f"step, got {type(feed).__name__}"
            )
        return SessionRunArgs(fetches=None, feed_dict=feed)


FeedFnHook = StepArgsHook
"""TF's name for ``StepArgsHook``, kept for porting: ``feed_fn()``'s keys name step arguments."""
