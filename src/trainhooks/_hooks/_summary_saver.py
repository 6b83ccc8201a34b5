"""``SummarySaverHook``: write the scalar values a step returns to TensorBoard."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from trainhooks._session._hook import (
    HookSession,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
    select_fetches,
)
from trainhooks._session._timer import Clock, SecondOrStepTimer
from trainhooks._summary import ScalarWriter, as_scalar, is_scalar_like, require_tensorboard

__all__ = ["SummarySaverHook", "SupportsAddScalar", "scalar_summaries"]


class SupportsAddScalar(Protocol):
    """Anything with ``add_scalar(tag, value, step)``: our writer, ``torch``'s SummaryWriter."""

    def add_scalar(self, tag: str, value: float, step: int, /) -> Any: ...


class SummarySaverHook(SessionRunHook):
    """Saves scalar summaries every ``save_steps`` steps or ``save_secs`` seconds.

    TF's arguments, where they mean something here: exactly one of ``save_steps`` /
    ``save_secs``; exactly one of ``output_dir`` (event files go there, shared with other
    writers of that directory) or ``summary_writer`` (any object with
    ``add_scalar(tag, value, step)``, e.g. ``torch.utils.tensorboard.SummaryWriter``).
    As in TF the first run is always summarised, at the global step after it.

    What is written: with ``scalars=None`` every scalar-like value of the mapping the step
    returns (nested mappings give ``outer/inner`` tags; a bare scalar result is tagged
    ``result``); otherwise only the values ``scalars`` names (a list of names, or a dict
    ``{tag: name}``), which must be scalar-like. TF's ``summary_op`` has no meaning without a
    graph and is refused with a pointer to ``scalars``; ``scaffold`` is accepted and ignored.
    Events are flushed after each write, so a crash loses none already written; as in TF a
    ``SessionLog.START`` marks the first step of each session, so TensorBoard drops what a
    crashed earlier run wrote past the point this one resumed from (also after a
    recoverable error or a rollback re-created the session). ``save_secs`` are read
    from ``clock`` (default ``time.monotonic``; see ``SecondOrStepTimer``).
    """

    def __init__(
        self,
        save_steps: int | None = None,
        save_secs: float | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        summary_writer: SupportsAddScalar | None = None,
        scaffold: Any = None,
        summary_op: Any = None,
        *,
        scalars: Mapping[str, str] | Iterable[str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if (save_steps is None) == (save_secs is None):
            raise ValueError(
                "SummarySaverHook needs exactly one of save_steps and save_secs "
                f"(got save_steps={save_steps!r}, save_secs={save_secs!r})"
            )
        if (output_dir is None) == (summary_writer is None):
            raise ValueError("SummarySaverHook needs exactly one of output_dir and summary_writer")
        if summary_op is not None:
            raise TypeError(
                "SummarySaverHook has no graph summary ops; return the values from the step "
                "and name them with scalars=[...] (or leave scalars=None to write every "
                "scalar the step returns)"
            )
        if summary_writer is None:
            require_tensorboard()  # ImportError naming the extra, before any step runs
        self._timer = SecondOrStepTimer(save_secs, save_steps, clock=clock)
        self._output_dir = output_dir
        self._writer: SupportsAddScalar | None = summary_writer
        self._owns_writer = summary_writer is None
        self._tags = _tag_map(scalars)
        self._started = False

    def begin(self) -> None:
        if self._owns_writer and self._writer is None:
            assert self._output_dir is not None
            self._writer = ScalarWriter(self._output_dir)
        self._timer.reset()
        self._started = False

    def after_create_session(self, session: HookSession, coord: Any) -> None:
        # Again after every re-creation (a recoverable error, a rollback): the state is
        # back at an older step, and the next write's SessionLog.START makes TensorBoard
        # drop what was written past it, as after a crash. TF marks only the first start.
        self._started = False

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        # Decided here, not in before_run as TF must (it adds the summary op to the fetches
        # beforehand): the values are in the step's result anyway, and a hook without
        # before_run keeps every step on the session's fastest path.
        global_step = run_context.session.global_step
        first = not self._started
        if first:
            self._started = True
            if isinstance(self._writer, ScalarWriter):
                self._writer.add_session_start(global_step)
        if first or self._timer.should_trigger_for_step(global_step):
            self._timer.update_last_triggered_step(global_step)
            self._write(self._values(run_values.step_result), global_step)

    def _values(self, step_result: Any) -> dict[str, float]:
        if self._tags is None:
            return scalar_summaries(step_result)
        return {
            tag: _checked(tag, select_fetches(name, step_result))
            for tag, name in self._tags.items()
        }

    def end(self, session: HookSession) -> None:
        if self._writer is not None and hasattr(self._writer, "flush"):
            self._writer.flush()

    def release(self) -> None:
        """Close the event file this hook opened; the session calls this on every exit."""
        if self._owns_writer and isinstance(self._writer, ScalarWriter):
            writer, self._writer = self._writer, None
            writer.close()

    def _write(self, values: Mapping[str, float], step: int) -> None:
        writer = self._writer
        if writer is None or not values:
            return
        if isinstance(writer, ScalarWriter):
            writer.add_scalars(values, step)
            writer.flush()
            return
        for tag, value in values.items():
            writer.add_scalar(tag, value, step)
        if hasattr(writer, "flush"):
            writer.flush()


def scalar_summaries(step_result: Any, prefix: str = "") -> dict[str, float]:
    """Every scalar-like value of a step's result as ``{tag: float}``; others are skipped."""
    if isinstance(step_result, Mapping):
        values: dict[str, float] = {}
        for key, value in step_result.items():
            tag = f"{prefix}{key}"
            if isinstance(value, Mapping):
                values.update(scalar_summaries(value, tag + "/"))
            elif is_scalar_like(value):
                values[tag] = as_scalar(value)
        return values
    if not prefix and is_scalar_like(step_result):
        return {"result": as_scalar(step_result)}
    return {}


def _tag_map(scalars: Mapping[str, str] | Iterable[str] | None) -> dict[str, str] | None:
    if scalars is None:
        return None
    if isinstance(scalars, str):
        return {scalars: scalars}
    if isinstance(scalars, Mapping):
        return dict(scalars)
    return {name: name for name in scalars}


def _checked(tag: str, value: Any) -> float:
    try:
        return as_scalar(value)
    except TypeError as exc:
        raise TypeError(
            f"SummarySaverHook: the value for tag {tag!r} is not a scalar: {exc}"
        ) from None
