"""What ``MonitoredTrainingSession`` decides before creating a session.

Who is the chief, which of TF's default arguments apply, and which standard hooks the
chief gets. Kept apart from ``_factory.py`` so that the factory reads as TF's signature.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TypeVar

from trainhooks._hooks._checkpoint_saver import CheckpointSaverHook
from trainhooks._hooks._step_counter import StepCounterHook

__all__ = ["UseDefault", "default_is_chief", "resolve_default", "training_hooks"]

_LOG = logging.getLogger("trainhooks")
_Number = TypeVar("_Number", int, float)
_warned_unavailable: set[str] = set()


class UseDefault(int):
    """An int default that can be told apart from the same value passed explicitly.

    TF's ``USE_DEFAULT`` sentinel: ``save_checkpoint_secs`` defaults to 600 only while
    ``save_checkpoint_steps`` is not given. Being an int, it shows as ``600`` in
    signatures and help.
    """


def resolve_default(value: Any, alternative: Any) -> tuple[Any, Any]:
    """Drop ``value``'s default when ``alternative`` was given; strip the sentinel type."""
    if isinstance(value, UseDefault):
        value = None if alternative is not None else int(value)
    return value, alternative


def default_is_chief() -> bool:
    """Rank 0 when ``torch.distributed`` is initialised, else True; never imports torch."""
    if "torch" not in sys.modules:
        return True
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return True
    return bool(dist.get_rank() == 0)


def _positive(value: _Number | None) -> _Number | None:
    return value if value is not None and value > 0 else None


def training_hooks(
    *,
    chief_only_hooks: list[object],
    hooks: list[object],
    checkpoint_dir: str | os.PathLike[str] | None,
    summary_dir: str | os.PathLike[str] | None,
    save_checkpoint_secs: float | None,
    save_checkpoint_steps: int | None,
    save_summaries_steps: int | None,
    save_summaries_secs: float | None,
    log_step_count_steps: int | None,
    max_to_keep: int | None,
    async_save: bool = False,
) -> list[object]:
    """The chief's hook list in TF's order: chief-only, counter, summaries, saver, hooks."""
    result = list(chief_only_hooks)
    output_dir = summary_dir if summary_dir is not None else checkpoint_dir
    if output_dir is not None:
        every_n_steps = _positive(log_step_count_steps)
        if every_n_steps is not None:
            result.append(StepCounterHook(every_n_steps=int(every_n_steps), output_dir=output_dir))
        steps, secs = _positive(save_summaries_steps), _positive(save_summaries_secs)
        if steps is not None or secs is not None:
            summary_hook = _summary_saver_hook(
                save_steps=steps, save_secs=secs, output_dir=output_dir
            )
            if summary_hook is not None:
                result.append(summary_hook)
    steps, secs = _positive(save_checkpoint_steps), _positive(save_checkpoint_secs)
    if checkpoint_dir is not None and (steps is not None or secs is not None):
        if _has_saver_for(checkpoint_dir, [*chief_only_hooks, *hooks]):
            # TF would install a second saver writing every checkpoint twice; here two
            # writers on one directory would collide on its lock, so the user's hook wins.
            _LOG.info(
                "a CheckpointSaverHook for %s was given; not adding the default one",
                checkpoint_dir,
            )
        else:
            result.append(
                CheckpointSaverHook(
                    checkpoint_dir,
                    save_secs=secs,
                    save_steps=steps,
                    max_to_keep=max_to_keep,
                    async_save=async_save,
                )
            )
    result.extend(hooks)
    return result


def _has_saver_for(checkpoint_dir: str | os.PathLike[str], hooks: list[object]) -> bool:
    target = os.path.realpath(checkpoint_dir)
    return any(
        isinstance(h, CheckpointSaverHook) and os.path.realpath(h.checkpoint_dir) == target
        for h in hooks
    )


def _summary_saver_hook(**kwargs: Any) -> object | None:
    """``SummarySaverHook(**kwargs)``, or None with one warning when TensorBoard is missing."""
    try:
        from trainhooks._hooks._summary_saver import SummarySaverHook  # lazy: no TensorBoard

        return SummarySaverHook(**kwargs)
    except ImportError as exc:
        if "SummarySaverHook" not in _warned_unavailable:
            _warned_unavailable.add("SummarySaverHook")
            _LOG.warning(
                "save_summaries_steps/secs is set but SummarySaverHook is unavailable (%s); "
                "training continues without summaries. Install trainhooks[tensorboard] to "
                "write them, or pass save_summaries_steps=None to silence this warning.",
                exc,
            )
        return None
