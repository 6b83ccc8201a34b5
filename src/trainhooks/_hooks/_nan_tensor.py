"""``NanTensorHook``: stop training (or fail) as soon as the loss is NaN or infinite."""

from __future__ import annotations

import logging
import math

from trainhooks._exceptions import NanLossDuringTrainingError
from trainhooks._session._hook import (
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

    **Deviation:** TF checks only for NaN; this hook also treats +/-inf as a bad loss,
    because the weights an infinite loss produces are as broken as a NaN's, one step
    later. The loss is read with ``item()``, so a loss on an accelerator costs one
    device-to-host copy per step.
    """

    def __init__(self, loss_name: str, fail_on_nan_loss: bool = True) -> None:
        self._loss_name = loss_name
        self._fail_on_nan_loss = fail_on_nan_loss

    # TF asks for the loss in before_run; here it is read from the step's result in
    # after_run, which gives the same value and keeps every step on the session's fast
    # path (a hook without before_run costs one call per step).
    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        result = run_values.step_result
        try:
            value = result[self._loss_name]
        except (KeyError, TypeError, IndexError):
            value = select_fetches(self._loss_name, result)  # raises the explanatory error
        loss = as_scalar(value)
        if math.isfinite(loss):
            return
        step = getattr(run_context.session, "global_step", None)
        message = f"Model diverged with loss = {loss} ({self._loss_name!r} at step {step})."
        if self._fail_on_nan_loss:
            logger.error(message)
            raise NanLossDuringTrainingError(message)
        logger.error("%s Requesting a stop.", message)
        run_context.request_stop()
