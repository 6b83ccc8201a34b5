"""Opening one checkpoint for a collective load, on local disk or in object storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainhooks._store._reader import CheckpointReader
from trainhooks._store._remote._reader import RemoteCheckpointReader
from trainhooks._store._remote._url import ObjectPath

__all__ = ["Reader", "open_checkpoint"]

Reader = CheckpointReader | RemoteCheckpointReader


def open_checkpoint(
    path: Path | ObjectPath,
    storage_options: dict[str, Any] | None = None,
    *,
    data_files: bool = True,
    follow_symlinks: bool = True,
) -> Reader:
    """A structure-checked reader of the checkpoint at ``path``; without
    ``follow_symlinks`` a local one found by name is never read through a symbolic link.
    ``data_files=False`` reads the manifest only."""
    if isinstance(path, ObjectPath):
        return RemoteCheckpointReader(path, storage_options=storage_options, data_files=data_files)
    return CheckpointReader(path, follow_symlinks=follow_symlinks, data_files=data_files)
