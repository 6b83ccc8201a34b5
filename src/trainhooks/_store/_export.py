"""Exports: one checkpoint as a standalone ``.safetensors`` file, and directories of them.

A checkpoint's data file already has the safetensors layout, so export verifies it and
copies it byte for byte; the state tree and step go into the header's ``__metadata__`` so
the single file is self-describing. Written crash-safely: temp file beside, fsync, rename.
An export may hold a part of the checkpoint under other names (an ``ExportSelection``,
e.g. only the model, named as its ``state_dict()`` names it): which part is the caller's
choice, made from the tree, which the store does not interpret.

An :class:`ExportDirectory` keeps several exports (``best-<step>.safetensors``) each
committed by a JSON file beside it (``best-<step>.json``), written after the tensors and
removed before them. After a crash at any moment the directory therefore holds complete
exports plus leftovers that :meth:`ExportDirectory.open` recognises and removes; which
exports to keep is the caller's choice (``BestCheckpointExporter`` ranks them by a metric).

Checkpoints and exports may both be in object storage (URLs): the checkpoint is then read
through range reads, and an export directory at a URL keeps the same promises with
objects (``_remote/_exports.py``): the tensor object first, its JSON created last and
exclusively, the JSON removed first.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from trainhooks._exceptions import CheckpointWriteError
from trainhooks._store._durable import fsync_directory, write_file_atomically
from trainhooks._store._faults import fault_point
from trainhooks._store._reader import CheckpointReader
from trainhooks._store._remote._url import ObjectPath, as_url, local_path
from trainhooks._store._safetensors import build_header

if TYPE_CHECKING:
    from trainhooks._store._remote._reader import RemoteCheckpointReader

__all__ = [
    "EXPORT_FORMAT",
    "ExportDirectory",
    "ExportSelection",
    "ExportStore",
    "SelectTensors",
    "StoredExport",
    "export_checkpoint",
    "export_names",
    "export_record",
    "match_export_name",
    "open_export_directory",
    "parse_export",
]

_LOG = logging.getLogger("trainhooks")

EXPORT_FORMAT = "trainhooks.best_export"
_NAME = re.compile(r"^best-(\d{12})\.(json|safetensors)$")
_TEMP_MARK = ".tmp-"  # write_file_atomically's temporary files: ".<name>.tmp-<hex>"


@dataclass(frozen=True)
class ExportSelection:
    """The part of a checkpoint an export holds.

    ``names`` maps each exported tensor's name in the checkpoint to its name in the file;
    ``tree`` is the tree written to the file's metadata (naming tensors as the file does);
    ``only`` says which part it is (written as ``trainhooks_only``).
    """

    names: Mapping[str, str]
    tree: Any
    only: str


# Chooses the part to export from the checkpoint's tree.
SelectTensors = Callable[[Any], ExportSelection]


def export_checkpoint(
    checkpoint_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    select: SelectTensors | None = None,
) -> Path | ObjectPath:
    """Write ``checkpoint_path``'s tensors (all, or the part ``select`` picks from its tree)
    to ``out_path`` as one verified safetensors file; either may be a URL.

    Without ``select`` tensor names are the checkpoint's (e.g. ``model/fc1.weight``);
    ``__metadata__`` holds ``trainhooks_step`` and ``trainhooks_tree`` (the JSON state tree).
    """
    source = as_url(checkpoint_path)
    if source is None:
        with CheckpointReader(local_path(checkpoint_path)) as reader:
            return _export(reader, out_path, select)
    from trainhooks._store._remote._reader import RemoteCheckpointReader

    with RemoteCheckpointReader(source) as remote:
        return _export(remote, out_path, select)


def _export(
    reader: CheckpointReader | RemoteCheckpointReader,
    out_path: str | os.PathLike[str],
    select: SelectTensors | None,
) -> Path | ObjectPath:
    """Export through ``reader`` (a local or a remote checkpoint reader: the same methods)."""
    tree = reader.manifest.tree
    chosen = [(r, r.name) for r in reader.manifest.tensors]
    extra: dict[str, str] = {}
    if select is not None:
        selection = select(tree)
        chosen = [(r, selection.names[r.name]) for r, _ in chosen if r.name in selection.names]
        tree, extra = selection.tree, {"trainhooks_only": selection.only}
    records = [record for record, _ in chosen]
    header, _ = build_header(
        [(name, r.dtype, r.shape, r.end - r.begin) for r, name in chosen],
        {
            "format": "pt",
            "producer": "trainhooks",
            "trainhooks_step": str(reader.manifest.step),
            "trainhooks_tree": json.dumps(tree, separators=(",", ":")),
            **extra,
        },
    )

    def parts() -> Iterator[memoryview]:
        yield memoryview(header)
        for record in records:
            yield reader.mapped_view(record)  # verified whole before any byte is written

    if (url := as_url(out_path)) is not None:
        from trainhooks._store._remote._exports import upload_export

        return upload_export(url, parts(), source=reader.path, step=reader.step)
    out = local_path(out_path).absolute()
    try:
        write_file_atomically(out, parts())
    except OSError as exc:
        raise CheckpointWriteError(
            f"could not export {reader.path} to {out}: {exc.strerror or exc}",
            path=out,
            step=reader.step,
            errno=exc.errno,
        ) from exc
    return out


@dataclass(frozen=True)
class StoredExport:
    """One committed export: its tensor file, its commit mark and the mark's JSON."""

    step: int
    path: Path | ObjectPath
    metadata_path: Path | ObjectPath
    metadata: dict[str, Any]


class ExportStore(Protocol):
    """A directory of exports, local (:class:`ExportDirectory`) or in object storage."""

    def open(self) -> list[StoredExport]:
        """Remove an interrupted export's leftovers; the committed exports, by step."""

    def add(
        self,
        step: int,
        checkpoint_path: Path | ObjectPath,
        metadata: Mapping[str, Any],
        *,
        select: SelectTensors | None = None,
    ) -> StoredExport:
        """Export a checkpoint as the export of ``step``, committed by its JSON."""

    def remove(self, step: int) -> None:
        """Remove the export of ``step``: its JSON first, then its tensors."""


def open_export_directory(location: str | os.PathLike[str]) -> ExportStore:
    """The export directory at ``location``: a local path, or a URL (``s3://...``)."""
    if (url := as_url(location)) is not None:
        from trainhooks._store._remote._exports import RemoteExportDirectory

        return RemoteExportDirectory(url)
    return ExportDirectory(local_path(location))


def export_names(step: int) -> tuple[str, str]:
    """``(JSON commit mark, tensor file)`` names of the export of ``step``."""
    stem = f"best-{step:012d}"
    return f"{stem}.json", f"{stem}.safetensors"


def match_export_name(name: str) -> tuple[int, str] | None:
    """``(step, "json" | "safetensors")`` of a name an export directory holds, else None."""
    match = _NAME.match(name)
    return None if match is None else (int(match.group(1)), match.group(2))


def export_record(
    step: int, checkpoint_path: Path | ObjectPath, file_name: str, metadata: Mapping[str, Any]
) -> bytes:
    """The JSON that commits the export of ``step`` (the caller's ``metadata`` plus the
    format, step, source checkpoint and tensor file name)."""
    record = {
        **metadata,
        "format": EXPORT_FORMAT,
        "version": 1,
        "step": step,
        "checkpoint": str(checkpoint_path),
        "safetensors": file_name,
        "exported_at": time.time(),
    }
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8")


def parse_export(data: bytes, where: object) -> dict[str, Any] | None:
    """An export's JSON, or None when it is not one of ours (or is damaged: a warning)."""
    try:
        meta = json.loads(data.decode("utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
            return None  # not an export: not ours to rank or delete
        int(meta["step"])
    except (ValueError, KeyError, TypeError) as exc:
        _LOG.warning("Ignoring unreadable export metadata %s: %s", where, exc)
        return None
    return meta


class ExportDirectory:
    """A directory of exports, each committed by its JSON file (see the module docstring).

    Only names this class writes (``best-<12 digits>`` and their temporary files) are ever
    removed; JSON files of another format are left alone and not reported.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def open(self) -> list[StoredExport]:
        """Create the directory if needed, remove the leftovers of an interrupted export
        and return the committed exports, by step."""
        self.directory.mkdir(parents=True, exist_ok=True)
        exports: list[StoredExport] = []
        names = set(os.listdir(self.directory))
        for name in sorted(names):
            match = match_export_name(name)
            path = self.directory / name
            if match is None:
                if name.startswith(".best-") and _TEMP_MARK in name:
                    path.unlink(missing_ok=True)  # a temporary file of an interrupted write
                continue
            metadata_path, tensor_path = self._paths(match[0])
            if match[1] == "safetensors":
                if metadata_path.name not in names:
                    path.unlink(missing_ok=True)  # exported, never committed by its JSON
                continue
            export = _read_export(metadata_path, tensor_path)
            if export is not None:
                exports.append(export)
        return exports

    def add(
        self,
        step: int,
        checkpoint_path: Path | ObjectPath,
        metadata: Mapping[str, Any],
        *,
        select: SelectTensors | None = None,
    ) -> StoredExport:
        """Export ``checkpoint_path`` (the part ``select`` picks, or all of it) as the export
        of ``step``, then commit it by writing its JSON (``metadata`` plus the format,
        step, source and file name)."""
        metadata_path, path = self._paths(step)
        export_checkpoint(checkpoint_path, path, select=select)
        fault_point("listener_export_before_metadata")
        data = export_record(step, checkpoint_path, path.name, metadata)
        write_file_atomically(metadata_path, data)
        return StoredExport(step, path, metadata_path, json.loads(data))

    def remove(self, step: int) -> None:
        """Remove the export of ``step`` crash-safely: its commit mark first, then its tensor
        file (a crash in between leaves an uncommitted file that ``open`` removes)."""
        fault_point("listener_export_before_remove")
        metadata_path, path = self._paths(step)
        metadata_path.unlink(missing_ok=True)
        fsync_directory(self.directory)
        path.unlink(missing_ok=True)
        fsync_directory(self.directory)

    def _paths(self, step: int) -> tuple[Path, Path]:
        """``(JSON commit mark, tensor file)`` of the export of ``step``."""
        json_name, tensor_name = export_names(step)
        return self.directory / json_name, self.directory / tensor_name


def _read_export(metadata_path: Path, path: Path) -> StoredExport | None:
    """The export ``metadata_path`` commits, or None (with a warning if it is damaged)."""
    try:
        meta = parse_export(metadata_path.read_bytes(), metadata_path)
    except OSError as exc:
        _LOG.warning("Ignoring unreadable export metadata %s: %s", metadata_path, exc)
        return None
    if meta is None:
        return None
    if not path.is_file():
        _LOG.warning("Ignoring %s: its tensor file %s is missing", metadata_path, path)
        return None
    return StoredExport(int(meta["step"]), path, metadata_path, meta)
