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
from trainhooks._hooks._resume_check import ResumeCheckHook
from trainhooks._hooks._step_counter import StepCounterHook
from trainhooks._store._remote._url import as_url

__all__ = [
    "UseDefault",
    "check_chief_is_rank_zero",
    "default_is_chief",
    "resolve_default",
    "training_hooks",
]

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


def check_chief_is_rank_zero(chief: bool) -> None:
    """Under ``torch.distributed`` (world > 1) the chief must be rank 0: DCP's coordinator,
    which commits the collective saves the chief's hooks ask for."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    rank = dist.get_rank()
    if dist.get_world_size() > 1 and chief != (rank == 0):
        raise ValueError(
            f"is_chief={chief} on rank {rank}: in a torch.distributed job the chief is rank 0 "
            "(it commits every collective save); leave is_chief=None"
        )


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
    resume_check: bool | ResumeCheckHook = True,
    async_save: bool = False,
) -> list[object]:
    """The chief's hook list in TF's order: chief-only, counter, summaries, saver, hooks;
    the resume check (not in TF) follows the saver."""
    result = list(chief_only_hooks)
    output_dir = summary_dir if summary_dir is not None else checkpoint_dir
    if output_dir is not None:
        events_dir = _local_events_dir(output_dir)
        every_n_steps = _positive(log_step_count_steps)
        if every_n_steps is not None:
            result.append(StepCounterHook(every_n_steps=int(every_n_steps), output_dir=events_dir))
        steps, secs = _positive(save_summaries_steps), _positive(save_summaries_secs)
        if events_dir is not None and (steps is not None or secs is not None):
            summary_hook = _summary_saver_hook(
                save_steps=steps, save_secs=secs, output_dir=output_dir
            )
            if summary_hook is not None:
                result.append(summary_hook)
    steps, secs = _positive(save_checkpoint_steps), _positive(save_checkpoint_secs)
    given = [*chief_only_hooks, *hooks]
    saver_hook = None if checkpoint_dir is None else _saver_for(checkpoint_dir, given)
    if checkpoint_dir is not None and (steps is not None or secs is not None):
        if saver_hook is not None:
            # TF would install a second saver writing every checkpoint twice; the user's
            # hook is the directory's saver, so the user's hook wins.
            _check_max_to_keep(max_to_keep, saver_hook)
            _LOG.info(
                "a CheckpointSaverHook for %s was given; not adding the default one",
                checkpoint_dir,
            )
        else:
            saver_hook = CheckpointSaverHook(
                checkpoint_dir,
                save_secs=secs,
                save_steps=steps,
                max_to_keep=None if max_to_keep is None else int(max_to_keep),
                async_save=async_save,
            )
            result.append(saver_hook)
    if saver_hook is not None:
        result.extend(_resume_check(resume_check, saver_hook, given))
    result.extend(hooks)
    return result


def _local_events_dir(output_dir: str | os.PathLike[str]) -> str | os.PathLike[str] | None:
    """Where event files go: they are local files, so a ``checkpoint_dir`` (or a
    ``summary_dir``) in object storage gets none; steps/sec is still logged."""
    if as_url(output_dir) is None:
        return output_dir
    _LOG.info(
        "no summaries are written to %s (event files are local): pass a local "
        "summary_dir=... to MonitoredTrainingSession to write them",
        output_dir,
    )
    return None


def _saver_for(
    checkpoint_dir: str | os.PathLike[str], hooks: list[object]
) -> CheckpointSaverHook | None:
    target = os.path.realpath(checkpoint_dir)
    for h in hooks:
        if isinstance(h, CheckpointSaverHook) and os.path.realpath(h.checkpoint_dir) == target:
            return h
    return None


def _resume_check(
    option: bool | ResumeCheckHook, saver_hook: CheckpointSaverHook, hooks: list[object]
) -> list[object]:
    """The resume check to add after the saver: none when off or already given."""
    if option is False or any(isinstance(h, ResumeCheckHook) for h in hooks):
        return []
    check = ResumeCheckHook() if option is True else option
    if check.saver_hook is None:
        check._follow(saver_hook)
    return [check]


def _check_max_to_keep(max_to_keep: int | None, hook: CheckpointSaverHook) -> None:
    """Refuse a ``max_to_keep`` that the user's own saver hook would silently ignore."""
    if isinstance(max_to_keep, UseDefault) or (max_to_keep or None) == hook.max_to_keep:
        return
    where = (
        f"CheckpointSaverHook({str(hook.checkpoint_dir)!r}, ..., max_to_keep={max_to_keep!r})"
        if hook.owns_saver
        else f"its saver: saver=Saver(max_to_keep={max_to_keep!r})"
    )
    kept = "every checkpoint" if hook.max_to_keep is None else hook.max_to_keep
    raise ValueError(
        f"MonitoredTrainingSession(max_to_keep={max_to_keep!r}) would be ignored: it is for "
        f"the default CheckpointSaverHook, and the hooks hold your own CheckpointSaverHook "
        f"for {hook.checkpoint_dir}, which keeps {kept}. Set it on your hook instead "
        f"({where}) and drop it here."
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
