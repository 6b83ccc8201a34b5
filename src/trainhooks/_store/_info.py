"""``CheckpointInfo``: what a caller learns about one committed checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["CheckpointInfo"]


@dataclass(frozen=True)
class CheckpointInfo:
    """One committed checkpoint.

    ``time`` is the wall clock at save (``time.time()``), kept as metadata only: nothing
    in trainhooks schedules by it. ``nbytes`` counts every file of the checkpoint.
    """

    step: int
    path: Path
    time: float
    nbytes: int
    num_tensors: int
    format_version: int
