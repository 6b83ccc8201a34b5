"""The resume journal: a small JSON file beside the checkpoints, read and written whole.

It holds, for the newest few checkpoints, what the steps right after each one returned
(numbers only), so that a restored run can compare its re-run steps with the run that
crashed (``ResumeCheckHook``). The store only keeps the file; what the numbers mean is
the hook's business.

Decisions:

* One file, replaced whole with the atomic-write helper (temp file, fsync, rename): a
  reader sees the old journal or the new one, never a torn one. It stays small (the
  writer keeps a few windows of a few dozen steps), so a rewrite costs about one fsync.
* The journal is a diagnostic, never a source of truth: a missing file reads as empty,
  and an unreadable one raises ``ValueError`` for the caller to report and ignore.
* Numbers are JSON numbers; NaN and infinities, which strict JSON lacks, are the strings
  ``"nan"``, ``"inf"`` and ``"-inf"``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainhooks._store._durable import write_file_atomically

__all__ = [
    "JOURNAL_NAME",
    "MAX_JOURNAL_BYTES",
    "Windows",
    "read_journal",
    "remove_journal_temps",
    "write_journal",
]

JOURNAL_NAME = ".trainhooks-journal.json"
MAX_JOURNAL_BYTES = 1 << 20  # far above what the hook writes; caps what a reader loads
_FORMAT = "trainhooks.resume-journal"
_VERSION = 1
# the temp names ``write_file_atomically`` makes for the journal, and nothing else
_TEMP_RE = re.compile(re.escape(f".{JOURNAL_NAME}.tmp-") + "[0-9a-f]{32}")
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

# checkpoint step -> step after it -> name -> number
Windows = Mapping[int, Mapping[int, Mapping[str, float]]]


def write_journal(directory: str | os.PathLike[str], windows: Windows) -> None:
    """Replace ``directory``'s journal with ``windows``, crash-safely; raises ``OSError``."""
    document = {
        "format": _FORMAT,
        "version": _VERSION,
        "windows": {
            str(after): {
                str(step): {name: _encode_number(v) for name, v in values.items()}
                for step, values in steps.items()
            }
            for after, steps in windows.items()
        },
    }
    data = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    write_file_atomically(Path(directory) / JOURNAL_NAME, data.encode())


def read_journal(directory: str | os.PathLike[str]) -> dict[int, dict[int, dict[str, float]]]:
    """The windows in ``directory``'s journal; empty when there is none.

    Raises ``ValueError`` naming the file when it is too large, not JSON or not a journal,
    and ``OSError`` when it cannot be read.
    """
    path = Path(directory) / JOURNAL_NAME
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_JOURNAL_BYTES + 1)
    except FileNotFoundError:
        return {}
    if len(data) > MAX_JOURNAL_BYTES:
        raise ValueError(f"{path} is larger than {MAX_JOURNAL_BYTES} bytes; not a journal")
    try:
        document = json.loads(data)
        if document.get("format") != _FORMAT or document.get("version") != _VERSION:
            raise ValueError("unknown format or version")
        return {
            _step(after): {
                _step(step): {_name(name): _decode_number(v) for name, v in values.items()}
                for step, values in steps.items()
            }
            for after, steps in document["windows"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a readable resume journal ({exc})") from None


def remove_journal_temps(directory: str | os.PathLike[str]) -> list[str]:
    """Delete temp files a crash left mid-write of the journal; returns their names.

    Only names of exactly the shape the journal's writes use are touched.
    """
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for name in os.listdir(directory):
            if _TEMP_RE.fullmatch(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(Path(directory) / name)
                removed.append(name)
    return removed


def _encode_number(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _decode_number(value: Any) -> float:
    if isinstance(value, str):
        return _NON_FINITE[value]  # KeyError: not a number we wrote
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def _step(text: Any) -> int:
    step = int(text)
    if step < 0 or str(step) != text:
        raise ValueError(f"{text!r} is not a step")
    return step


def _name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{name!r} is not a name")
    return name
