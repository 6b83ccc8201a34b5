"""``EvaluationListener``: evaluate the model of each checkpoint, reported once committed."""

from __future__ import annotations

import json
import logging
import math
import os
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from trainhooks._listeners._base import CheckpointSaverListener
from trainhooks._session._hook import HookSession
from trainhooks._summary import ScalarWriter, as_scalar, tensorboard_available

__all__ = ["EvaluationListener"]

logger = logging.getLogger(__name__)


class EvaluationListener(CheckpointSaverListener):
    """Calls ``eval_fn(session) -> {metric: number}`` after every ``every_n_saves``-th save.

    Saves are counted from the one at session creation (the first), so with the default
    ``every_n_saves=1`` the starting point is evaluated too.

    The state evaluated is exactly the one the checkpoint holds: ``eval_fn`` runs in
    ``before_save``, right before the state is written or snapshotted, and its metrics are
    published in ``after_save``, once the checkpoint is committed. So with a background
    save (``async_save=True``), whose ``after_save`` comes steps later when training has
    moved on, the metrics are still those of the saved step; and an ``eval_fn`` error is
    raised from ``after_save``, after the checkpoint is safe, as in a synchronous save.
    Each result is kept in ``history`` (``{step: metrics}``, latest evaluation last),
    ``last_step`` and ``last_metrics``, so listeners placed after this one in the list
    (``BestCheckpointExporter``, ``EarlyStoppingListener``) can read the metrics of the save
    they are called for.

    With ``output_dir``, every evaluation is appended to ``output_dir/<name>.jsonl`` (one
    JSON object per line, flushed and fsynced, so it survives a crash right after) and, when
    ``tensorboard`` is True or None-and-installed, written as TensorBoard scalars to
    ``output_dir/<name>/`` (a separate run next to the training summaries).

    The contract's "don't act twice" rule: ``end()`` evaluates the last checkpoint only if
    ``after_save`` did not already evaluate that same step.

    Across restarts: ``history`` and the count of saves (the every-n-th schedule) are
    saved inside each checkpoint under ``name`` and restored at session creation. A
    resumed session evaluates the checkpoint it restored again (its listeners run once
    more for it); that evaluation is not appended to the JSONL file a second time when
    the interrupted run already recorded it, and TensorBoard replaces its point (the
    session-start event drops the points a crashed run wrote from that step on).
    """

    def __init__(
        self,
        eval_fn: Callable[[HookSession], Mapping[str, Any]],
        every_n_saves: int = 1,
        output_dir: str | os.PathLike[str] | None = None,
        name: str = "eval",
        *,
        tensorboard: bool | None = None,
    ) -> None:
        if not callable(eval_fn):
            raise TypeError(f"eval_fn must be a function of the session, got {eval_fn!r}")
        if every_n_saves < 1:
            raise ValueError(f"every_n_saves must be >= 1, got {every_n_saves}")
        if not name or os.sep in name or name in (".", ".."):
            raise ValueError(f"name must be a plain file name (it names files), got {name!r}")
        self.eval_fn = eval_fn
        self.every_n_saves = every_n_saves
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.name = name
        self._tensorboard = tensorboard
        if tensorboard and output_dir is None:
            raise ValueError("tensorboard=True needs an output_dir to write event files to")
        self.history: dict[int, dict[str, float]] = {}
        self._saves = 0  # saves whose after_save ran
        self._in_flight = 0  # saves between their before_save and after_save
        self._measured: dict[int, dict[str, float] | Exception] = {}  # before_save -> after_save
        self._writer: ScalarWriter | None = None

    @property
    def last_step(self) -> int | None:
        """The step of the latest evaluation of this session (``None`` before the first)."""
        return next(reversed(self.history), None)

    @property
    def last_metrics(self) -> dict[str, float] | None:
        """The metrics of the latest evaluation of this session (``None`` before the first)."""
        step = self.last_step
        return None if step is None else self.history[step]

    @property
    def jsonl_path(self) -> Path | None:
        """Where evaluations are appended, or ``None`` without ``output_dir``."""
        return None if self.output_dir is None else self.output_dir / f"{self.name}.jsonl"

    def begin(self) -> None:
        self.history = {}
        self._saves = 0
        self._in_flight = 0
        self._measured = {}

    def state_dict(self) -> dict[str, Any]:
        """The saves counted (the every-n-th schedule) and every evaluation so far: as the
        checkpoint is taken between ``before_save`` and ``after_save``, the save in progress
        is not counted yet (a resumed session calls both again for its restored step)."""
        return {"saves": self._saves, "history": {s: dict(m) for s, m in self.history.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._saves = int(state["saves"])
        self.history = {
            int(step): {str(k): float(v) for k, v in metrics.items()}
            for step, metrics in state["history"].items()
        }

    def before_save(self, session: HookSession, global_step_value: int) -> None:
        self._in_flight += 1  # counted in _saves by its after_save
        if (self._saves + self._in_flight) % self.every_n_saves == 0:
            try:
                self._measured[global_step_value] = self._measure(session, global_step_value)
            except Exception as exc:  # raised from after_save, once the checkpoint is safe
                self._measured[global_step_value] = exc

    def after_save(self, session: HookSession, global_step_value: int) -> None:
        self._in_flight = max(0, self._in_flight - 1)
        self._saves += 1
        measured = self._measured.pop(global_step_value, None)
        if isinstance(measured, Exception):
            raise measured
        if measured is not None:
            self._record(session, global_step_value, measured)

    def end(self, session: HookSession, global_step_value: int) -> None:
        try:
            if self.last_step != global_step_value:
                self.evaluate(session, global_step_value)
        finally:
            self._close_writer()

    def evaluate(self, session: HookSession, step: int) -> dict[str, float]:
        """Evaluate now, record the metrics at ``step`` and return them."""
        metrics = self._measure(session, step)
        self._record(session, step, metrics)
        return metrics

    def _measure(self, session: HookSession, step: int) -> dict[str, float]:
        return self._as_metrics(self.eval_fn(session), step)

    def _record(self, session: HookSession, step: int, metrics: dict[str, float]) -> None:
        self.history.pop(step, None)  # re-evaluated (after a recovery): it is the latest now
        self.history[step] = metrics
        if self.output_dir is not None:
            if not self._recorded_before_restart(session, step):
                self._append_jsonl(step, metrics)
            self._write_tensorboard(step, metrics)
        logger.info(
            "%s at step %d: %s",
            self.name,
            step,
            ", ".join(f"{k} = {v:.6g}" for k, v in metrics.items()),
        )

    def _as_metrics(self, raw: Any, step: int) -> dict[str, float]:
        if not isinstance(raw, Mapping):
            raise TypeError(
                f"EvaluationListener {self.name!r}: eval_fn must return a dict of metrics, "
                f"got {type(raw).__name__} at step {step}"
            )
        metrics: dict[str, float] = {}
        for key, value in raw.items():
            try:
                metrics[str(key)] = as_scalar(value)
            except TypeError as exc:
                raise TypeError(
                    f"EvaluationListener {self.name!r}: metric {key!r} at step {step} is not "
                    f"a number: {exc}"
                ) from None
        return metrics

    def _recorded_before_restart(self, session: HookSession, step: int) -> bool:
        """Whether ``step`` is the checkpoint just restored and the JSONL file already has
        its evaluation (the interrupted run wrote it after that checkpoint's commit)."""
        restored = session.restored_checkpoint
        path = self.jsonl_path
        if restored is None or restored.step != step or path is None or not path.exists():
            return False
        return step in _recorded_steps(path)

    def _append_jsonl(self, step: int, metrics: dict[str, float]) -> None:
        assert self.output_dir is not None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "step": step,
            "wall_time": time.time(),
            "metrics": {k: (v if math.isfinite(v) else str(v)) for k, v in metrics.items()},
        }
        line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
        with open(self.output_dir / f"{self.name}.jsonl", "ab+") as f:
            end = f.seek(0, os.SEEK_END)
            if end > 0 and os.pread(f.fileno(), 1, end - 1) != b"\n":
                line = b"\n" + line  # a line a crash cut short must not swallow this one
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def _write_tensorboard(self, step: int, metrics: dict[str, float]) -> None:
        if self._tensorboard is False:
            return
        if self._writer is None:
            if self._tensorboard is None and not tensorboard_available():
                self._tensorboard = False
                return
            assert self.output_dir is not None
            self._writer = ScalarWriter(self.output_dir / self.name)
            # end() closes it; after an exception (no end) it closes with this listener
            weakref.finalize(self, self._writer.close)
            self._writer.add_session_start(step)  # drops a crashed run's later points
        self._writer.add_scalars(metrics, step)
        self._writer.flush()

    def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()


def _recorded_steps(path: Path) -> set[int]:
    """The steps of the records in a JSONL file of evaluations (torn lines skipped)."""
    steps = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                steps.add(int(json.loads(line)["step"]))
            except (ValueError, KeyError, TypeError):
                continue
    return steps
