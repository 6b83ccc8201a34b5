"""``trainhooks verify``: recompute every checksum of one checkpoint or a whole directory.

A directory is checked completely, damaged checkpoints included: ``list_checkpoints``
leaves those out, so every sub-directory named like a checkpoint is verified too, and a
damaged one is reported instead of silently skipped. The scan goes on after a failure so
one run names all the damage; the exit code is 1 if anything failed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

import trainhooks
from trainhooks._cli._errors import (
    EXIT_CORRUPT,
    EXIT_OK,
    CliError,
    error_line,
)
from trainhooks._cli._places import Place, absolute, exists, is_file, resolved
from trainhooks._cli._render import (
    emit_json,
    human_bytes,
    info_json,
    json_option,
    note,
    plural,
    stderr_console,
    stdout_console,
)
from trainhooks._cli._resolve import (
    basename_for,
    candidates_in,
    committed_basename,
    existing_path,
    listing_entry,
    not_a_checkpoint,
)


@dataclass(frozen=True)
class Outcome:
    """The verification result of one checkpoint directory."""

    path: Place
    step: int | None
    info: Any  # CheckpointInfo when intact
    error: trainhooks.CheckpointError | None

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = (
            info_json(self.info)
            if self.info is not None
            else {"step": self.step, "path": str(absolute(self.path))}
        )
        obj["ok"] = self.error is None
        if self.error is not None:
            obj["error"] = {
                "type": type(self.error).__name__,
                "message": str(self.error),
                "file": getattr(self.error, "file", None),
                "tensor": getattr(self.error, "tensor", None),
                "byte_range": getattr(self.error, "byte_range", None),
            }
        return obj


@click.command("verify")
@click.argument("target", metavar="DIR|CKPT")
@json_option
def verify(target: str, as_json: bool) -> int:
    """Fully verify the checksums of CKPT, or of every checkpoint in DIR.

    Exit 0 when everything is intact; 1 when anything is corrupt, with one line per
    damaged checkpoint on stderr naming the file, tensor, byte range and step.
    """
    paths = _plan(target)
    console = None if as_json else stdout_console()
    outcomes = _run(paths, lambda outcome: _print_outcome(console, outcome) if console else None)
    failures = [o for o in outcomes if o.error is not None]
    if console is None:
        emit_json(
            {
                "ok": not failures,
                "checked": len(outcomes),
                "corrupt": len(failures),
                "checkpoints": [o.to_json() for o in outcomes],
            }
        )
    else:
        summary = f"{plural(len(outcomes), 'checkpoint')} verified"
        text = f"{summary}, {len(failures)} corrupt" if failures else f"{summary}, all intact"
        console.print(Text(text, style="bold red" if failures else "bold green"))
    for failure in failures:
        print(error_line(failure.error), file=sys.stderr)  # type: ignore[arg-type]
    return EXIT_CORRUPT if failures else EXIT_OK


def _plan(target: str) -> list[Place]:
    """The checkpoint directories to verify for a command-line path."""
    path = existing_path(target)
    if is_file(path):  # a file inside a checkpoint: verify that checkpoint
        path = resolved(path).parent
        if committed_basename(path.name) is None and listing_entry(path) is None:
            raise CliError(f"{target} is a file, not a checkpoint or a directory of checkpoints")
    if committed_basename(resolved(path).name) is not None:
        return [path]
    # every directory named like a checkpoint, listed (valid) or damaged alike
    every = candidates_in(path).get(basename_for(path), [])
    if not every:
        return [path]  # maybe a checkpoint under a foreign name; the store decides
    return sorted(every, key=lambda p: p.name)


def _run(paths: list[Place], on_outcome: Callable[[Outcome], None]) -> list[Outcome]:
    """Verify each path in turn under one progress bar (stderr, terminals only).

    Results are handed to ``on_outcome`` as they come, so a long directory scan shows
    each verdict at once (rich prints stdout lines above the live bar).
    """
    console = stderr_console()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    outcomes = []
    with Progress(
        *columns, console=console, transient=True, disable=not console.is_terminal
    ) as progress:
        task = progress.add_task("verifying", total=None)
        for index, path in enumerate(paths, 1):
            progress.reset(task, total=None, description=f"[{index}/{len(paths)}] {path.name}")
            outcome = _verify_one(path, progress, task, single=len(paths) == 1)
            if outcome is not None:
                outcomes.append(outcome)
                on_outcome(outcome)
    return outcomes


def _verify_one(path: Place, progress: Progress, task: TaskID, *, single: bool) -> Outcome | None:
    """The verdict on one checkpoint; None if retention removed it while we were looking."""

    def report(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    try:
        info = trainhooks.verify_checkpoint(path, progress=report)
    except (trainhooks.CheckpointCorruptError, trainhooks.CheckpointFormatError) as exc:
        if not single and not exists(path):
            _vanished(path)
            return None
        return Outcome(path, exc.step if exc.step is not None else _step_of(path), None, exc)
    except (trainhooks.CheckpointNotFoundError, FileNotFoundError) as exc:
        usage = not_a_checkpoint(path, exc) if single else None
        if usage is not None:
            raise usage from exc
        if single:
            raise
        _vanished(path)
        return None
    return Outcome(path, info.step, info, None)


def _vanished(path: Place) -> None:
    note(f"{path.name} was removed while verifying (a running job's retention); skipped")


def _step_of(path: Place) -> int | None:
    name = resolved(path).name
    return int(name.rsplit("-", 1)[1]) if committed_basename(name) is not None else None


def _print_outcome(console: Console, outcome: Outcome) -> None:
    """One line per checkpoint on stdout; a damaged one's cause goes to stderr at the end."""
    step = "?" if outcome.step is None else str(outcome.step)
    if outcome.error is None:
        size = "  " + human_bytes(outcome.info.nbytes)
        line = Text.assemble(
            ("OK       ", "bold green"), f"step {step:>8}  ", str(outcome.path), (size, "dim")
        )
    else:
        line = Text.assemble(("CORRUPT  ", "bold red"), f"step {step:>8}  ", str(outcome.path))
    console.print(line, soft_wrap=True)
