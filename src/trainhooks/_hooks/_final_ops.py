"""``FinalOpsHook``: compute something once when the session ends normally."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainhooks._session._hook import HookSession, SessionRunHook

__all__ = ["FinalOpsHook"]


class FinalOpsHook(SessionRunHook):
    """Calls ``final_fn(session)`` in ``end()`` and keeps its result as ``final_ops_values``.

    TF's ``FinalOpsHook(final_ops)`` evaluates tensors in the final session; here the
    final "op" is any function of the session (its ``state`` and ``global_step`` are the
    trained model after the last save). ``final_ops_values`` is ``None`` until ``end()``
    ran, so it stays ``None`` when the session exits by an exception.
    """

    def __init__(self, final_fn: Callable[[HookSession], Any]) -> None:
        if not callable(final_fn):
            raise TypeError(
                f"FinalOpsHook needs a function of the session, got {type(final_fn).__name__}"
            )
        self._final_fn = final_fn
        self._final_ops_values: Any = None

    @property
    def final_ops_values(self) -> Any:
        """What ``final_fn`` returned at the end of the last session (``None`` before)."""
        return self._final_ops_values

    def begin(self) -> None:
        self._final_ops_values = None

    def end(self, session: HookSession) -> None:
        self._final_ops_values = self._final_fn(session)
