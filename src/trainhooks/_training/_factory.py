"""``MonitoredTrainingSession``: a ``MonitoredSession`` with TF's standard hooks installed.

It sits above the hooks layer because it builds hooks (``CheckpointSaverHook``,
``StepCounterHook``, ``SummarySaverHook``): the session layer runs whatever hooks it is
given and knows none of them. What it decides before creating the session (who is the
chief, which defaults apply, which hooks) is in ``_defaults.py``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, MutableMapping
from typing import Any

from trainhooks._hooks._nan_tensor import NanTensorHook
from trainhooks._hooks._resume_check import ResumeCheckHook
from trainhooks._session._collective import DEFAULT_SYNC_EVERY_STEPS
from trainhooks._session._core import MonitoredSession
from trainhooks._session._dispatch import as_hook_list
from trainhooks._training._defaults import (
    UseDefault,
    check_chief_is_rank_zero,
    default_is_chief,
    resolve_default,
    training_hooks,
)

__all__ = ["MonitoredTrainingSession"]


def MonitoredTrainingSession(  # TF's name (a function, CamelCase), kept for porting
    *,
    is_chief: bool | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    state: MutableMapping[str, Any] | None = None,
    hooks: Iterable[object] | None = None,
    chief_only_hooks: Iterable[object] | None = None,
    save_checkpoint_secs: float | None = UseDefault(600),
    save_checkpoint_steps: int | None = None,
    save_summaries_steps: int | None = UseDefault(100),
    save_summaries_secs: float | None = None,
    log_step_count_steps: int | None = 100,
    steps_per_run: int = 1,
    recoverable_errors: Iterable[type[BaseException]] = (),
    preemption_signals: Iterable[int] | None = None,
    max_to_keep: int | None = UseDefault(5),
    summary_dir: str | os.PathLike[str] | None = None,
    master: str = "",
    scaffold: Any = None,
    config: Any = None,
    stop_grace_period_secs: float = 120,
    max_wait_secs: float = 7200,
    save_graph_def: bool = True,
    resume_check: bool | ResumeCheckHook = True,
    async_save: bool = False,
    sync_every_steps: int = DEFAULT_SYNC_EVERY_STEPS,
) -> MonitoredSession:
    """Create a ``MonitoredSession`` with TF's standard hooks installed on the chief.

    On the chief (``is_chief=None``: rank 0 when ``torch.distributed`` is initialised,
    else True), in this order: ``chief_only_hooks``, a ``StepCounterHook``
    (``log_step_count_steps``) and a ``SummarySaverHook`` (``save_summaries_steps`` /
    ``_secs``) when ``summary_dir`` or ``checkpoint_dir`` is set, a ``CheckpointSaverHook``
    (``save_checkpoint_secs`` / ``_steps``, keeping ``max_to_keep``) when
    ``checkpoint_dir`` is set, then ``hooks``. Other workers run only ``hooks``. Every
    worker restores ``state`` from ``checkpoint_dir``. A ``NanTensorHook`` in rollback mode
    runs before all of them, so that a step it undoes is never saved or summarised.

    ``preemption_signals`` (None: ``(signal.SIGTERM,)`` when ``checkpoint_dir`` is set,
    else none; ``()`` turns the handling off) are the signals after which the session
    finishes the running step, saves, ends and raises ``Preempted`` (exit status
    ``EXIT_PREEMPTED``); see ``MonitoredSession`` and docs/preemption.md.

    Not in TF: with checkpoints saved, the chief also gets a ``ResumeCheckHook`` that
    warns when steps re-run after a restore return other values than before the crash
    (a scheduler or data position missing from ``state``). ``resume_check=False`` turns
    it off; ``resume_check=ResumeCheckHook(rtol=..., on_divergence="raise")`` tunes it.

    ``async_save=True`` makes that default ``CheckpointSaverHook`` save in the background
    (see its docstring), to a local directory or a URL alike.

    As in TF, giving ``save_checkpoint_steps`` drops the 600-second default, and giving
    ``save_summaries_secs`` drops the 100-step default. ``max_to_keep`` is for the default
    saver hook: given together with your own ``CheckpointSaverHook`` for
    ``checkpoint_dir`` that keeps another number, it is refused (``ValueError``) rather
    than silently ignored; set it on your hook. All arguments are keyword-only:
    TF's first positional argument is ``master``, so positional TF calls would bind
    wrongly. ``master``, ``scaffold``, ``config``, ``stop_grace_period_secs``,
    ``max_wait_secs`` and ``save_graph_def`` are accepted and ignored.

    Under ``torch.distributed`` (initialised, world size > 1) the chief must be rank 0, and
    every rank runs the same code: the chief's saver hook decides when to save and every
    rank joins one collective save (with ``async_save``: every rank copies its part, the
    write runs in the background and ``after_save`` comes at a later sync point); stops and
    preemption signals are agreed at sync points, at every save step and at least every
    ``sync_every_steps`` steps (docs/distributed.md).
    """
    chief = default_is_chief() if is_chief is None else bool(is_chief)
    check_chief_is_rank_zero(chief)
    first, all_hooks = _rollback_hooks_first(as_hook_list(hooks))
    if chief:
        save_checkpoint_secs, save_checkpoint_steps = resolve_default(
            save_checkpoint_secs, save_checkpoint_steps
        )
        save_summaries_steps, save_summaries_secs = resolve_default(
            save_summaries_steps, save_summaries_secs
        )
        all_hooks = training_hooks(
            chief_only_hooks=as_hook_list(chief_only_hooks),
            hooks=all_hooks,
            checkpoint_dir=checkpoint_dir,
            summary_dir=summary_dir,
            save_checkpoint_secs=save_checkpoint_secs,
            save_checkpoint_steps=save_checkpoint_steps,
            save_summaries_steps=save_summaries_steps,
            save_summaries_secs=save_summaries_secs,
            log_step_count_steps=log_step_count_steps,
            max_to_keep=max_to_keep,
            resume_check=resume_check,
            async_save=async_save,
        )
    if preemption_signals is None:
        preemption_signals = () if checkpoint_dir is None else (signal.SIGTERM,)
    return MonitoredSession(
        hooks=[*first, *all_hooks],
        state=state,
        checkpoint_dir=checkpoint_dir,
        steps_per_run=steps_per_run,
        recoverable_errors=recoverable_errors,
        preemption_signals=preemption_signals,
        sync_every_steps=sync_every_steps,
    )


def _rollback_hooks_first(hooks: list[object]) -> tuple[list[object], list[object]]:
    """Split off the hooks that must see a step before any other hook records it.

    A ``NanTensorHook`` in rollback mode undoes a bad step by raising from ``after_run``;
    the hooks after it never see that step. In TF's order it would come after the saver
    and the summary hook, which would first save the broken state and write its values.
    """
    first: list[object] = [h for h in hooks if isinstance(h, NanTensorHook) and h.rolls_back]
    return first, [h for h in hooks if not any(h is f for f in first)]
