"""``CheckpointInfo``: what a caller learns about one committed checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainhooks._store._remote._url import ObjectPath

__all__ = ["CheckpointInfo", "newest_first_key"]


@dataclass(frozen=True)
class CheckpointInfo:
    """One committed checkpoint.

    ``time`` is the wall clock at save (``time.time()``), kept as metadata only: nothing
    in trainhooks schedules by it. ``nbytes`` counts every file of the checkpoint.
    ``metadata`` is the JSON the caller passed to ``Saver.save(metadata=...)``.
    ``sequence`` is the checkpoint's place in its directory's history of commits (1, 2,
    ...; 0 for checkpoints written before trainhooks recorded it): the newest commit has
    the highest, which is what ``latest_checkpoint`` and ``Saver.restore()`` pick — after
    a rollback that is not the highest step (see ``docs/design.md``, "Rolling back").
    """

    step: int
    path: Path | ObjectPath  # an ObjectPath (str() is its URL) in object storage
    time: float
    nbytes: int
    num_tensors: int
    format_version: int
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    sequence: int = 0

    @property
    def commit_order(self) -> tuple[int, int]:
        """Sort key of commits, oldest first: the sequence, then (for checkpoints without
        one) the step."""
        return self.sequence, self.step


def newest_first_key(step: int, sequence: int | None) -> tuple[int, int, int]:
    """Sort key, descending, of the candidates for "the newest commit" of a directory or
    prefix, each known by its name's ``step`` and its manifest's ``sequence`` (None: the
    manifest could not be read).

    By sequence, then step; an unreadable one comes first: it may be the newest, and a
    reader that needs the newest should try it, fail, and say so.
    """
    return (1, 0, step) if sequence is None else (0, sequence, step)
