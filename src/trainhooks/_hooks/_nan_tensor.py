"""``NanTensorHook``: stop, fail or roll back as soon as the loss is NaN, infinite or a spike."""

from __future__ import annotations

import logging
import math
from typing import Any

from trainhooks._exceptions import NanLossDuringTrainingError, RollbackRequested
from trainhooks._hooks._bad_steps import RollbackBudget, SpikeDetector, rollback_target
from trainhooks._session._hook import (
    HookSession,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
    select_fetches,
)
from trainhooks._summary import as_scalar

__all__ = ["NanTensorHook"]

logger = logging.getLogger(__name__)


class NanTensorHook(SessionRunHook):
    """Checks the value named ``loss_name`` after every step.

    With ``fail_on_nan_loss=True`` (TF's default) a bad loss raises
    ``NanLossDuringTrainingError``: the session exits by an exception, so no final save
    writes the broken state over the last good checkpoint. With ``False`` it logs an
    error and requests a stop (the normal end then saves the state as it is).

    ``rollback=True`` undoes the bad step instead (``fail_on_nan_loss`` is then unused):
    the hook raises ``RollbackRequested`` naming the newest checkpoint before the bad step
    whose values are all finite; the session restores it, skips the run of the bad step
    from then on (``session.skipped_steps``) and goes on. After ``max_rollbacks``
    rollbacks whose bad steps lie within ``rollback_window`` steps, the next bad step
    raises ``NanLossDuringTrainingError`` naming them all. ``spike_factor=k`` also
    counts as bad a finite loss above k times the median of the last ``spike_window``
    good losses, in every mode. ``MonitoredTrainingSession`` runs a rollback hook before
    its other hooks; in a hook list of your own, put it before the saver and summary
    hooks, or they record the step before it is undone (docs/preemption.md). Under
    ``torch.distributed`` the ranks agree on a rollback at the next sync point; until
    then this hook judges no loss on the rank that asked (docs/distributed.md).

    **Deviation:** TF checks only for NaN; this hook also treats +/-inf as a bad loss,
    because the weights an infinite loss produces are as broken as a NaN's, one step
    later. The loss is read with ``item()``, so a loss on an accelerator costs one
    device-to-host copy per step.
    """

    def __init__(
        self,
        loss_name: str,
        fail_on_nan_loss: bool = True,
        *,
        rollback: bool = False,
        max_rollbacks: int = 3,
        rollback_window: int = 1000,
        spike_factor: float | None = None,
        spike_window: int = 100,
    ) -> None:
        _check_positive("max_rollbacks", max_rollbacks, minimum=0)
        _check_positive("rollback_window", rollback_window, minimum=1)
        _check_positive("spike_window", spike_window, minimum=1)
        if spike_factor is not None and not spike_factor > 1:
            raise ValueError(
                f"spike_factor must be above 1 (a loss above that many times the recent "
                f"median is a spike), got {spike_factor!r}; pass None to detect no spikes"
            )
        self._loss_name = loss_name
        self._fail_on_nan_loss = fail_on_nan_loss
        self._rollback = bool(rollback)
        self._budget = RollbackBudget(max_rollbacks, rollback_window)
        self._spikes = None if spike_factor is None else SpikeDetector(spike_factor, spike_window)

    @property
    def rolls_back(self) -> bool:
        """Whether a bad loss rolls the step back (rather than failing or stopping)."""
        return self._rollback

    def after_create_session(self, session: HookSession, coord: Any) -> None:
        if self._spikes is not None:  # after a rollback: forget the losses it undid
            self._spikes.forget_after(session.global_step)

    # TF asks for the loss in before_run; here it is read from the step's result in
    # after_run, which gives the same value and keeps every step on the session's fast
    # path (a hook without before_run costs one call per step).
    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        distributed = run_context.session.distributed
        if distributed is not None and distributed.rollback_pending:
            return  # a step the ranks will undo at their next sync point: nothing to judge
        result = run_values.step_result
        try:
            value = result[self._loss_name]
        except (KeyError, TypeError, IndexError):
            value = select_fetches(self._loss_name, result)  # raises the explanatory error
        loss = as_scalar(value)
        session = run_context.session
        if math.isfinite(loss):
            if self._spikes is None:
                return
            problem = self._spikes.check(loss)
            if problem is None:
                self._spikes.add(session.global_step, loss)
                return
        else:
            problem = "not finite"
        step = session.global_step
        if self._rollback:
            raise self._rollback_request(session, step, loss, problem)
        message = f"Model diverged with loss = {loss} ({self._loss_name!r} at step {step}"
        message += ")." if problem == "not finite" else f": {problem})."
        if self._fail_on_nan_loss:
            logger.error(message)
            raise NanLossDuringTrainingError(message, steps=(step,))
        logger.error("%s Requesting a stop.", message)
        run_context.request_stop()

    def _rollback_request(
        self, session: HookSession, step: int, loss: float, problem: str
    ) -> RollbackRequested:
        """The request that undoes ``step``; raises when the hook must give up instead."""
        what = f"{self._loss_name!r} = {loss} at step {step} ({problem})"
        recent = self._budget.record(step)
        if self._budget.exhausted(recent):
            raise NanLossDuringTrainingError(
                f"NanTensorHook gave up: {what}, the {len(recent)}th bad loss within "
                f"{self._budget.window} steps (bad steps: {list(recent)}), and at most "
                f"{self._budget.max_rollbacks} rollbacks are allowed there. Skipping the "
                "data of single steps does not cure this run: lower the learning rate, "
                "check the data and the model, or raise max_rollbacks.",
                steps=recent,
            )
        directory = session.checkpoint_dir
        target = None if directory is None else rollback_target(directory, step)
        if target is None:
            where = "no checkpoint_dir" if directory is None else f"nothing usable in {directory}"
            raise NanLossDuringTrainingError(
                f"NanTensorHook cannot roll back {what}: there is no checkpoint before step "
                f"{step} holding only finite values ({where}). Save checkpoints more often, "
                "or from the start (CheckpointSaverHook saves at session creation).",
                steps=(step,),
            )
        logger.warning(
            "bad loss %s: rolling back to the checkpoint at step %d and skipping step %d "
            "(rollback %d of at most %d within %d steps)",
            what,
            target.step,
            step,
            len(recent),
            self._budget.max_rollbacks,
            self._budget.window,
        )
        return RollbackRequested(target.step, (step,), what)


def _check_positive(name: str, value: int, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
