"""``BestCheckpointExporter``: keep the best k checkpoints as standalone artifacts."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from trainhooks._listeners._base import CheckpointSaverListener
from trainhooks._listeners._evaluation import EvaluationListener
from trainhooks._listeners._metric import MetricFn, MetricReader, check_mode, improves
from trainhooks._session._hook import HookSession
from trainhooks._store._durable import fsync_directory, write_file_atomically
from trainhooks._store._faults import fault_point
from trainhooks._store._layout import DEFAULT_BASENAME, committed_path

__all__ = ["BestCheckpointExporter", "BestExport"]

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "trainhooks.best_export"
_NAME = re.compile(r"^best-(\d{12})\.(json|safetensors)$")
_TEMP_MARK = ".tmp-"


@dataclass(frozen=True)
class BestExport:
    """One kept export: ``path`` (the safetensors file) and ``metadata_path`` (its JSON)."""

    step: int
    value: float
    path: Path
    metadata_path: Path


class BestCheckpointExporter(CheckpointSaverListener):
    """Exports each checkpoint that ranks among the best ``keep`` by ``metric``.

    An export is ``export_dir/best-<step>.safetensors`` (one standalone file any
    safetensors reader opens, written by ``trainhooks.export_safetensors``) plus
    ``best-<step>.json`` (step, metric, value, mode, source checkpoint). Both are written
    crash-safely (temporary file beside the target, fsync, rename, fsync of the directory);
    the JSON is written last and is the export's commit mark, and it is removed first when
    an export drops out of the best ``keep``. So after a crash at any point ``export_dir``
    holds complete exports only; leftovers are cleaned in ``begin()``, which also reloads
    the exports already there, so a restarted run keeps competing against them.

    Which checkpoint: ``checkpoint_dir`` if given, else the session's (the directory of
    ``MonitoredTrainingSession(checkpoint_dir=...)``). Pass it explicitly when the saver
    hook writes elsewhere (TF's pattern of a ``CheckpointSaverHook`` in ``chief_only_hooks``
    without ``checkpoint_dir`` on the session), and ``basename`` when the saver uses
    ``Saver(basename=...)``.

    The metric comes from ``source`` (an ``EvaluationListener`` placed before this one in
    the listener list) or ``metric_fn(session)``. Saves without a metric value are skipped;
    ``end()`` looks again at the last step (the evaluator may evaluate it there).
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
    ) -> None:
        if keep < 1:
            raise ValueError(f"BestCheckpointExporter: keep must be >= 1, got {keep}")
        self.metric = metric
        self.mode = check_mode("BestCheckpointExporter", mode)
        self.keep = keep
        self.export_dir = Path(export_dir)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.basename = basename
        self._read = MetricReader("BestCheckpointExporter", metric, source, metric_fn)
        self._exports: list[BestExport] = []
        self._considered: set[int] = set()

    @property
    def best(self) -> list[BestExport]:
        """The kept exports, best first."""
        return list(self._exports)

    def begin(self) -> None:
        self.export_dir.mkdir(parents=True, exist_ok=True)
        exports = self._load_existing()
        # a crash between committing a new export and removing the one it displaced
        # leaves one too many: finish that removal now
        self._exports, extra = exports[: self.keep], exports[self.keep :]
        for old in extra:
            self._remove(old)
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
            fault_point("listener_export_before_remove")
            self._remove(old)
        logger.info("Exported step %d (%s = %s) to %s", step, self.metric, value, export.path)

    def _rank_key(self, export: BestExport) -> tuple[float, int]:
        # best first; among equals the earlier step first (it was there before)
        return (-export.value if self.mode == "max" else export.value, export.step)

    def _checkpoint_path(self, session: HookSession, step: int) -> Path:
        directory = self.checkpoint_dir or session.checkpoint_dir
        if directory is None:
            raise ValueError(
                "BestCheckpointExporter: the session has no checkpoint_dir; pass "
                "checkpoint_dir=... to the exporter"
            )
        return committed_path(Path(directory), self.basename, step)

    def _export(self, session: HookSession, step: int, value: float) -> BestExport:
        from trainhooks._store._export import export_safetensors

        source = self._checkpoint_path(session, step)
        stem = f"best-{step:012d}"
        path = self.export_dir / f"{stem}.safetensors"
        metadata_path = self.export_dir / f"{stem}.json"
        export_safetensors(source, path)
        fault_point("listener_export_before_metadata")
        metadata = {
            "format": EXPORT_FORMAT,
            "version": 1,
            "step": step,
            "metric": self.metric,
            "value": value,
            "mode": self.mode,
            "checkpoint": str(source),
            "safetensors": path.name,
            "exported_at": time.time(),
        }
        _write_durably(metadata_path, json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        return BestExport(step, value, path, metadata_path)

    def _remove(self, export: BestExport) -> None:
        export.metadata_path.unlink(missing_ok=True)  # the commit mark goes first
        fsync_directory(self.export_dir)
        export.path.unlink(missing_ok=True)
        fsync_directory(self.export_dir)

    def _load_existing(self) -> list[BestExport]:
        """Read back the complete exports of ``export_dir``; remove our incomplete leftovers."""
        exports: list[BestExport] = []
        names = set(os.listdir(self.export_dir))
        for name in sorted(names):
            match = _NAME.match(name)
            path = self.export_dir / name
            if match is None:
                if name.startswith(".best-") and _TEMP_MARK in name:
                    path.unlink(missing_ok=True)  # a temporary file of an interrupted write
                continue
            stem = f"best-{match.group(1)}"
            if match.group(2) == "safetensors":
                if f"{stem}.json" not in names:
                    path.unlink(missing_ok=True)  # exported, never committed by its JSON
                continue
            export = self._read_export(path, self.export_dir / f"{stem}.safetensors")
            if export is not None:
                exports.append(export)
        exports.sort(key=self._rank_key)
        return exports

    def _read_export(self, metadata_path: Path, path: Path) -> BestExport | None:
        try:
            meta = json.loads(metadata_path.read_text(encoding="utf-8"))
            ours = isinstance(meta, dict) and meta.get("format") == EXPORT_FORMAT
            if ours:
                export = BestExport(int(meta["step"]), float(meta["value"]), path, metadata_path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("Ignoring unreadable export metadata %s: %s", metadata_path, exc)
            return None
        if not ours:
            return None  # not an export: not ours to rank or delete
        if meta.get("metric") != self.metric or meta.get("mode") != self.mode:
            raise ValueError(
                f"BestCheckpointExporter: {self.export_dir} holds exports ranked by "
                f"{meta.get('metric')!r} ({meta.get('mode')}), not {self.metric!r} "
                f"({self.mode}); give each exporter its own export_dir"
            )
        if not path.is_file():
            logger.warning("Ignoring %s: its tensor file %s is missing", metadata_path, path)
            return None
        return export


def _write_durably(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically and durably."""
    write_file_atomically(path, text.encode("utf-8"))
