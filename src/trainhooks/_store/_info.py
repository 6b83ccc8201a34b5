"""``CheckpointInfo``: what a caller learns about one committed checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainhooks._store._remote._url import ObjectPath

__all__ = ["CheckpointInfo"]


@dataclass(frozen=True)
class CheckpointInfo:
    """One committed checkpoint.

    ``time`` is the wall clock at save (``time.time()``), kept as metadata only: nothing
    in trainhooks schedules by it. ``nbytes`` counts every file of the checkpoint.
    ``metadata`` is the JSON the caller passed to ``Saver.save(metadata=...)``.
    """

    step: int
    path: Path | ObjectPath  # an ObjectPath (str() is its URL) in object storage
    time: float
    nbytes: int
    num_tensors: int
    format_version: int
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
