"""Names on disk: committed checkpoints, staging and deletion entries, and the files inside.

A reader accepts only ``<basename>-<12 digits>`` directories; staging (``.tmp-<hex>``) and
deletion (``.deleting-<hex>``) entries can never be mistaken for a checkpoint, and cleanup
removes only names of exactly those shapes, so nothing a user made is ever deleted.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

__all__ = [
    "DATA_FILE",
    "DEFAULT_BASENAME",
    "MANIFEST_FILE",
    "committed_name",
    "deleting_name",
    "leftover_step",
    "parse_committed",
    "split_committed",
    "staging_name",
]

DEFAULT_BASENAME = "ckpt"
DATA_FILE = "tensors.safetensors"
MANIFEST_FILE = "manifest.json"
_BASENAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]*")


def check_basename(basename: str) -> str:
    if not _BASENAME_RE.fullmatch(basename) or ".." in basename:
        raise ValueError(
            f"checkpoint basename {basename!r} must be letters, digits, '_' and '.', "
            "so that checkpoint names can never be confused with paths"
        )
    return basename


def committed_name(basename: str, step: int) -> str:
    return f"{basename}-{step:012d}"


def staging_name(basename: str, step: int) -> str:
    return f"{committed_name(basename, step)}.tmp-{uuid.uuid4().hex}"


def deleting_name(basename: str, step: int) -> str:
    return f"{committed_name(basename, step)}.deleting-{uuid.uuid4().hex}"


def parse_committed(name: str, basename: str) -> int | None:
    """The step of a committed checkpoint's directory name, or None for any other name."""
    match = re.fullmatch(rf"{re.escape(basename)}-(\d{{12,}})", name)
    return _canonical_step(match.group(1)) if match else None


def leftover_step(name: str, basename: str) -> int | None:
    """The step of a staging or deletion entry this library made, or None."""
    match = re.fullmatch(
        rf"{re.escape(basename)}-(\d{{12,}})\.(?:tmp|deleting)-[0-9a-f]{{32}}", name
    )
    return _canonical_step(match.group(1)) if match else None


def split_committed(name: str) -> tuple[str, int] | None:
    """``(basename, step)`` of a name shaped like a committed checkpoint with any valid
    basename (for tools that look at directories whose saver they do not know)."""
    basename = name.rpartition("-")[0]
    if not _BASENAME_RE.fullmatch(basename) or ".." in basename:
        return None
    step = parse_committed(name, basename)
    return None if step is None else (basename, step)


def _canonical_step(digits: str) -> int | None:
    """The step, if ``digits`` is exactly how ``committed_name`` spells it (12+ digits)."""
    step = int(digits)
    return step if f"{step:012d}" == digits else None


def committed_path(directory: Path, basename: str, step: int) -> Path:
    return directory / committed_name(basename, step)
