"""``BestCheckpointExporter``: keep the best k checkpoints as standalone artifacts."""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from trainhooks._listeners._base import CheckpointSaverListener
from trainhooks._listeners._evaluation import EvaluationListener
from trainhooks._listeners._metric import MetricFn, MetricReader, check_mode, improves
from trainhooks._session._hook import HookSession
from trainhooks._state._subtree import select_entry
from trainhooks._store._export import StoredExport, open_export_directory
from trainhooks._store._layout import DEFAULT_BASENAME, committed_name
from trainhooks._store._remote._url import ObjectPath, checkpoint_location

__all__ = ["BestCheckpointExporter", "BestExport"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BestExport:
    """One kept export: ``path`` (the safetensors file) and ``metadata_path`` (its JSON);
    ``ObjectPath``s (``str`` is the URL) when ``export_dir`` is in object storage."""

    step: int
    value: float
    path: Path | ObjectPath
    metadata_path: Path | ObjectPath


class BestCheckpointExporter(CheckpointSaverListener):
    """Exports each checkpoint that ranks among the best ``keep`` by ``metric``.

    An export is ``export_dir/best-<step>.safetensors`` (one standalone file any
    safetensors reader opens, written by ``trainhooks.export_safetensors``) plus
    ``best-<step>.json`` (step, metric, value, mode, source checkpoint). The store writes
    and removes them crash-safely (the JSON is the export's commit mark: written last,
    removed first), so after a crash at any point ``export_dir`` holds complete exports
    only; leftovers are cleaned in ``begin()``, which also reloads the exports already
    there, so a restarted run keeps competing against them.

    Which checkpoint: ``checkpoint_dir`` if given, else the session's (the directory of
    ``MonitoredTrainingSession(checkpoint_dir=...)``). Pass it explicitly when the saver
    hook writes elsewhere (TF's pattern of a ``CheckpointSaverHook`` in ``chief_only_hooks``
    without ``checkpoint_dir`` on the session), and ``basename`` when the saver uses
    ``Saver(basename=...)``.

    The metric comes from ``source`` (an ``EvaluationListener`` placed before this one in
    the listener list) or ``metric_fn(session)``. Saves without a metric value are skipped;
    ``end()`` looks again at the last step (the evaluator may evaluate it there).

    ``only="model"`` exports just that entry of the state (not the optimizer's moments or
    RNG states), its tensors named as the model's ``state_dict()`` names them, so
    ``model.load_state_dict(safetensors.torch.load_file(export.path))`` loads it
    (``trainhooks.export_safetensors(..., only=...)``).

    ``export_dir`` and ``checkpoint_dir`` may be URLs (``s3://bucket/prefix``): in object
    storage the JSON is created last and exclusively, and removed first, with the same
    promises (docs/object-storage.md).
    """

    def __init__(
        self,
        metric: str,
        mode: str = "max",
        keep: int = 1,
        *,
        export_dir: str | os.PathLike[str],
        source: EvaluationListener | None = None,
        metric_fn: MetricFn | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        basename: str = DEFAULT_BASENAME,
        only: str | None = None,
    ) -> None:
        if keep < 1:
            raise ValueError(f"BestCheckpointExporter: keep must be >= 1, got {keep}")
        self.metric = metric
        self.mode = check_mode("BestCheckpointExporter", mode)
        self.keep = keep
        self.export_dir = checkpoint_location(export_dir)
        self._store = open_export_directory(self.export_dir)
        self.checkpoint_dir = (
            checkpoint_location(checkpoint_dir) if checkpoint_dir is not None else None
        )
        self.basename = basename
        self.only = only
        self._read = MetricReader("BestCheckpointExporter", metric, source, metric_fn)
        self._exports: list[BestExport] = []
        self._considered: set[int] = set()

    @property
    def best(self) -> list[BestExport]:
        """The kept exports, best first."""
        return list(self._exports)

    def begin(self) -> None:
        exports = self._load_existing()
        # a crash between committing a new export and removing the one it displaced
        # leaves one too many: finish that removal now
        self._exports, extra = exports[: self.keep], exports[self.keep :]
        for old in extra:
            self._store.remove(old.step)
        self._considered = set()

    def after_save(self, session: HookSession, global_step_value: int) -> None:
        self._consider(session, global_step_value)

    def end(self, session: HookSession, global_step_value: int) -> None:
        self._consider(session, global_step_value)

    def _consider(self, session: HookSession, step: int) -> None:
        if step in self._considered:
            return
        value = self._read(session, step)
        if value is None:
            return
        self._considered.add(step)
        if math.isnan(value) or any(e.step == step for e in self._exports):
            return
        worst = self._exports[-1].value if len(self._exports) >= self.keep else None
        if not improves(value, worst, self.mode):
            return
        export = self._export(session, step, value)
        ranked = sorted([*self._exports, export], key=self._rank_key)
        self._exports, dropped = ranked[: self.keep], ranked[self.keep :]
        for old in dropped:
            self._store.remove(old.step)
        logger.info("Exported step %d (%s = %s) to %s", step, self.metric, value, export.path)

    def _rank_key(self, export: BestExport) -> tuple[float, int]:
        # best first; among equals the earlier step first (it was there before)
        return (-export.value if self.mode == "max" else export.value, export.step)

    def _checkpoint_path(self, session: HookSession, step: int) -> Path | ObjectPath:
        directory = self.checkpoint_dir or session.checkpoint_dir
        if directory is None:
            raise ValueError(
                "BestCheckpointExporter: the session has no checkpoint_dir; pass "
                "checkpoint_dir=... to the exporter"
            )
        return checkpoint_location(directory) / committed_name(self.basename, step)

    def _export(self, session: HookSession, step: int, value: float) -> BestExport:
        metadata = {"metric": self.metric, "value": value, "mode": self.mode, "only": self.only}
        select = None if self.only is None else functools.partial(select_entry, only=self.only)
        stored = self._store.add(
            step, self._checkpoint_path(session, step), metadata, select=select
        )
        return BestExport(step, value, stored.path, stored.metadata_path)

    def _load_existing(self) -> list[BestExport]:
        """The complete exports already in ``export_dir``, best first."""
        exports = [self._ranked(stored) for stored in self._store.open()]
        return sorted(filter(None, exports), key=self._rank_key)

    def _ranked(self, stored: StoredExport) -> BestExport | None:
        meta = stored.metadata
        if meta.get("metric") != self.metric or meta.get("mode") != self.mode:
            raise ValueError(
                f"BestCheckpointExporter: {self.export_dir} holds exports ranked by "
                f"{meta.get('metric')!r} ({meta.get('mode')}), not {self.metric!r} "
                f"({self.mode}); give each exporter its own export_dir"
            )
        if meta.get("only") != self.only:
            raise ValueError(
                f"BestCheckpointExporter: {self.export_dir} holds exports of "
                f"{_part(meta.get('only'))}, not of {_part(self.only)}; give each exporter "
                "its own export_dir"
            )
        try:
            value = float(meta["value"])
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("Ignoring export %s: no readable metric value (%s)", stored.path, exc)
            return None
        return BestExport(stored.step, value, stored.path, stored.metadata_path)


def _part(only: object) -> str:
    return "the whole state" if only is None else f"entry {only!r}"
