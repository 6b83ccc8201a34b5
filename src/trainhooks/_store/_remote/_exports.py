"""Exports in object storage: one safetensors object, and a prefix of ranked exports.

An object appears whole or not at all when its upload completes, so an export object
needs no temporary name; its size is checked after the upload. A prefix of exports keeps
the local :class:`~trainhooks._store._export.ExportDirectory`'s promises with objects:
``best-<step>.safetensors`` is uploaded first, then ``best-<step>.json`` is created
**last** with an exclusive create (``If-None-Match: *``): its existence commits the export.
Removal deletes the JSON first, so a half-removed export is never listed; ``open`` deletes
tensor objects no JSON commits (an export interrupted before its commit, or after its
JSON was removed).

The exported tensors are held in memory for the upload when the checkpoint itself is in
object storage (each downloaded and verified); from a local checkpoint they are views of
its mapped file.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from trainhooks._exceptions import CheckpointError, CheckpointWriteError
from trainhooks._store._export import (
    SelectTensors,
    StoredExport,
    export_checkpoint,
    export_names,
    export_record,
    match_export_name,
    parse_export,
)
from trainhooks._store._faults import fault_point
from trainhooks._store._remote._objects import open_objects
from trainhooks._store._remote._url import ObjectPath

__all__ = ["RemoteExportDirectory", "upload_export"]

_LOG = logging.getLogger("trainhooks")
_MAX_RECORD = 1 << 20  # an export's JSON is a few hundred bytes


def upload_export(
    url: str, parts: Iterable[memoryview], *, source: object, step: int | None
) -> ObjectPath:
    """Upload the concatenation of ``parts`` as the object ``url`` and check its size."""
    try:
        objects, path = open_objects(url)
        buffers = list(parts)  # each tensor verified before any byte is sent
        size = objects.upload(path, buffers)
        listed = objects.list(path).get(path)
        if listed != size:
            raise OSError(f"{url} has {listed} bytes after its upload, {size} were sent")
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointWriteError(
            f"could not export {source} to {url}: {type(exc).__name__}: {exc}",
            path=url,
            step=step,
        ) from exc
    return ObjectPath(url)


class RemoteExportDirectory:
    """A prefix of exports, each committed by its JSON object (see the module docstring)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.objects, self.root = open_objects(url, storage_options)

    def open(self) -> list[StoredExport]:
        """Delete the tensor objects no JSON commits and return the committed exports."""
        names = {
            path[len(self.root) + 1 :]: size
            for path, size in self.objects.list(self.root).items()
            if path.startswith(self.root + "/") and "/" not in path[len(self.root) + 1 :]
        }
        exports, orphans = [], []
        for name in sorted(names):
            match = match_export_name(name)
            if match is None:
                continue
            json_name, tensor_name = export_names(match[0])
            if match[1] == "safetensors":
                if json_name not in names:
                    orphans.append(f"{self.root}/{name}")
                continue
            export = self._read(json_name, tensor_name, names)
            if export is not None:
                exports.append(export)
        self.objects.delete(orphans)
        return exports

    def add(
        self,
        step: int,
        checkpoint_path: Path | ObjectPath,
        metadata: Mapping[str, Any],
        *,
        select: SelectTensors | None = None,
    ) -> StoredExport:
        """Upload the export of ``step``, then commit it by creating its JSON exclusively."""
        json_name, tensor_name = export_names(step)
        path = export_checkpoint(checkpoint_path, f"{self.url}/{tensor_name}", select=select)
        fault_point("listener_export_before_metadata")
        data = export_record(step, checkpoint_path, tensor_name, metadata)
        try:
            self.objects.create(f"{self.root}/{json_name}", data)
        except FileExistsError:
            raise CheckpointWriteError(
                f"{self.url}/{json_name} already exists (another exporter writing to "
                f"{self.url}, or an object trainhooks did not write); give each exporter "
                "its own export_dir",
                path=self.url,
                step=step,
            ) from None
        except Exception as exc:
            raise CheckpointWriteError(
                f"could not commit the export of step {step} to {self.url}: "
                f"{type(exc).__name__}: {exc}",
                path=self.url,
                step=step,
            ) from exc
        meta = parse_export(data, json_name) or {}
        return StoredExport(step, path, ObjectPath(self.url) / json_name, meta)

    def remove(self, step: int) -> None:
        """Delete the export of ``step``: its JSON first (it stops being an export), then
        its tensors (left by a crash, they are deleted by the next ``open``)."""
        fault_point("listener_export_before_remove")
        json_name, tensor_name = export_names(step)
        self.objects.delete([f"{self.root}/{json_name}"])
        self.objects.delete([f"{self.root}/{tensor_name}"])

    def _read(self, json_name: str, tensor_name: str, names: dict[str, int]) -> StoredExport | None:
        where = f"{self.url}/{json_name}"
        meta = None
        with contextlib.suppress(FileNotFoundError):  # removed since the listing
            data = self.objects.read(f"{self.root}/{json_name}", 0, _MAX_RECORD)
            meta = parse_export(data, where)
        if meta is None:
            return None
        if tensor_name not in names:
            _LOG.warning("Ignoring %s: its tensor object %s is missing", where, tensor_name)
            return None
        base = ObjectPath(self.url)
        return StoredExport(int(meta["step"]), base / tensor_name, base / json_name, meta)
