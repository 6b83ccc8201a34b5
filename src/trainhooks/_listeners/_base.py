"""``CheckpointSaverListener``: code that runs around every checkpoint save.

The lifecycle, documented once here (TF's contract, kept exactly):

1. ``begin()`` — when the saver hook begins, in list order; no step is known yet.
2. For every save at step ``S``: each listener's ``before_save(session, S)`` in order →
   the checkpoint is written and committed → each listener's ``after_save(session, S)``
   in order. A truthy return from ``after_save`` asks training to stop; every listener
   still gets its ``after_save`` first.
3. ``end(session, last_step)`` — once, when the session closes normally, after the final
   save (which is skipped when the last step was already saved).

With ``CheckpointSaverHook(async_save=True)`` the checkpoint is written in the background:
``before_save(session, S)`` runs just before the state is snapshotted, and
``after_save(session, S)`` at the first step boundary after checkpoint ``S`` is durable
(a stop it asks for happens there), when ``session.state`` may have moved on; the calls
keep the order above, and ``end`` comes after the final save is durable.

``session`` exposes ``global_step`` and ``state``, so a listener can evaluate or export
the model it was handed. A listener with its own schedule must handle the last checkpoint
in ``end()`` unless ``after_save`` already handled that step.
"""

from __future__ import annotations

from trainhooks._session._hook import HookSession

__all__ = ["CheckpointSaverListener"]


class CheckpointSaverListener:
    """Base class of checkpoint listeners; every method is a no-op."""

    def begin(self) -> None:
        """Called once before the session is created."""

    def before_save(self, session: HookSession, global_step_value: int) -> None:
        """Called before the checkpoint at ``global_step_value`` is written."""

    def after_save(self, session: HookSession, global_step_value: int) -> bool | None:
        """Called once the checkpoint is committed (durable); return True to request a stop."""
        return None

    def end(self, session: HookSession, global_step_value: int) -> None:
        """Called once at the end of a normal session, after the final save."""
