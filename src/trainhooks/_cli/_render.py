"""Output helpers shared by the commands: consoles, number/time formatting and JSON.

Human output goes through rich (tables, trees, progress on stderr); ``--json`` output is
plain ``json.dumps`` on stdout so scripts never see markup, colour or wrapping. Errors do
not go through here: they are one plain line on stderr (see ``_errors``).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import click
from rich.console import Console, JustifyMethod
from rich.table import Table

from trainhooks._cli._places import absolute

if TYPE_CHECKING:
    from trainhooks import CheckpointInfo

# Width used when stdout is a pipe or file and COLUMNS is unset: wide enough that table
# rows (paths, tensor names) are not wrapped mid-word for `grep` and friends.
_PIPE_WIDTH = 160


class _ResultConsole(Console):
    """A console whose reader closing the pipe ends the command quietly (exit 0).

    rich's default turns a broken pipe into ``SystemExit(1)``, which would read as our
    "corrupt checkpoint" exit code for ``trainhooks show DIR | head``.
    """

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


def stdout_console() -> Console:
    """The console for a command's human-readable result."""
    console = _ResultConsole(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = _ResultConsole(highlight=False, width=_PIPE_WIDTH)
    return console


def stderr_console() -> Console:
    """The console for notes and progress bars, kept off stdout so pipes stay clean."""
    return Console(stderr=True, highlight=False)


def note(message: str) -> None:
    """One informational line on stderr (e.g. which checkpoint a directory resolved to)."""
    print(f"trainhooks: {message}", file=sys.stderr)


def human_bytes(nbytes: int) -> str:
    """``1536`` -> ``1.5 KiB``: binary units, as ``ls -h`` and ``du -h`` print them."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def local_time(timestamp: float) -> str:
    """Wall-clock time of a save in the local zone, to the second."""
    return _dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def iso_utc(timestamp: float) -> str:
    """ISO 8601 UTC time for JSON consumers that should not guess the zone."""
    moment = _dt.datetime.fromtimestamp(timestamp, tz=_dt.timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def age(timestamp: float, now: float) -> str:
    """``42s``, ``5m``, ``3h``, ``2d`` ago: how stale a checkpoint is at a glance."""
    seconds = max(0.0, now - timestamp)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def plural(count: int, noun: str) -> str:
    """``1 tensor``, ``3 tensors``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def shape_text(shape: tuple[int, ...]) -> str:
    """``(3, 4)``; ``()`` for a scalar tensor."""
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def short_repr(value: Any, limit: int = 80) -> str:
    """A value's repr cut to ``limit`` characters, so one huge list cannot flood a table."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def info_json(info: CheckpointInfo, *, newest: bool | None = None) -> dict[str, Any]:
    """A checkpoint's public facts as a JSON object (the shape ``ls --json`` promises)."""
    obj: dict[str, Any] = {
        "step": info.step,
        "path": str(absolute(info.path)),  # a URL as it is
        "time": info.time,
        "time_iso": iso_utc(info.time),
        "nbytes": info.nbytes,
        "num_tensors": info.num_tensors,
        "format_version": info.format_version,
        "sequence": info.sequence,
        "metadata": dict(info.metadata),
    }
    if newest is not None:
        obj["newest"] = newest
    return obj


def emit_json(obj: Any) -> None:
    """Print strict JSON (no NaN literals: non-finite floats become strings) on stdout."""
    print(json.dumps(_strict(obj), indent=2, sort_keys=False))


def _strict(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, Mapping):
        return {str(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    item = getattr(obj, "item", None)  # NumPy scalars
    if callable(item):
        try:
            return _strict(item())
        except (TypeError, ValueError):
            pass
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return repr(obj)


def json_option(command: Any) -> Any:
    """The ``--json`` flag every command takes (machine-readable output on stdout)."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the result as JSON on stdout."
    )(command)


def make_table(title: str | None, *columns: tuple[str, str] | tuple[str, str, int]) -> Table:
    """A table of ``(header, "left"|"right"[, max_width])`` columns, as every command prints.

    The title gets its full width; the first column (names, paths) folds rather than being
    cut with an ellipsis, since a truncated tensor name cannot be pasted into ``--tensor``;
    a column given a ``max_width`` (long values) is cut with an ellipsis instead.
    """
    table = Table(title=title, title_justify="left", min_width=len(title) if title else None)
    for index, (header, align, *limit) in enumerate(columns):
        justify = cast(JustifyMethod, align)
        if index == 0:
            table.add_column(header, justify=justify, overflow="fold", min_width=12)
        elif limit:
            table.add_column(
                header, justify=justify, max_width=limit[0], overflow="ellipsis", no_wrap=True
            )
        else:
            table.add_column(header, justify=justify, no_wrap=True)
    return table
