"""``MonitoredTrainingSession``: a ``MonitoredSession`` with TF's standard hooks installed.

It sits above the hooks layer because it builds hooks (``CheckpointSaverHook``,
``StepCounterHook``, ``SummarySaverHook``): the session layer runs whatever hooks it is
given and knows none of them. What it decides before creating the session (who is the
chief, which defaults apply, which hooks) is in ``_defaults.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, MutableMapping
from typing import Any

from trainhooks._session._core import MonitoredSession
from trainhooks._session._dispatch import as_hook_list
from trainhooks._training._defaults import (
    UseDefault,
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
    max_to_keep: int | None = 5,
    summary_dir: str | os.PathLike[str] | None = None,
    master: str = "",
    scaffold: Any = None,
    config: Any = None,
    stop_grace_period_secs: float = 120,
    max_wait_secs: float = 7200,
    save_graph_def: bool = True,
    async_save: bool = False,
) -> MonitoredSession:
    """Create a ``MonitoredSession`` with TF's standard hooks installed on the chief.

    On the chief (``is_chief=None``: rank 0 when ``torch.distributed`` is initialised,
    else True), in this order: ``chief_only_hooks``, a ``StepCounterHook``
    (``log_step_count_steps``) and a ``SummarySaverHook`` (``save_summaries_steps`` /
    ``_secs``) when ``summary_dir`` or ``checkpoint_dir`` is set, a ``CheckpointSaverHook``
    (``save_checkpoint_secs`` / ``_steps``, keeping ``max_to_keep``) when
    ``checkpoint_dir`` is set, then ``hooks``. Other workers run only ``hooks``. Every
    worker restores ``state`` from ``checkpoint_dir``. ``async_save=True`` makes that
    default ``CheckpointSaverHook`` save in the background (see its docstring).

    As in TF, giving ``save_checkpoint_steps`` drops the 600-second default, and giving
    ``save_summaries_secs`` drops the 100-step default. All arguments are keyword-only:
    TF's first positional argument is ``master``, so positional TF calls would bind
    wrongly. ``master``, ``scaffold``, ``config``, ``stop_grace_period_secs``,
    ``max_wait_secs`` and ``save_graph_def`` are accepted and ignored.
    """
    chief = default_is_chief() if is_chief is None else bool(is_chief)
    all_hooks = as_hook_list(hooks)
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
            async_save=async_save,
        )
    return MonitoredSession(
        hooks=all_hooks,
        state=state,
        checkpoint_dir=checkpoint_dir,
        steps_per_run=steps_per_run,
        recoverable_errors=recoverable_errors,
    )
