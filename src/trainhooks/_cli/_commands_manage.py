"""``trainhooks prune`` and ``trainhooks export``: the two commands that write to disk.

Both delegate the writing to the store, which does it crash-safely (prune: rename aside,
fsync, then remove, under the directory's writer lock; export: temp file beside the
target, fsync, rename). These commands only choose the arguments and report. On object
storage prune holds the prefix's lease and deletes each manifest first; an exported object
appears whole when its upload completes.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

import trainhooks
from trainhooks._cli._errors import EXIT_USAGE, CliError
from trainhooks._cli._places import exists, is_dir, place_of, resolved, size_of
from trainhooks._cli._render import (
    emit_json,
    human_bytes,
    info_json,
    json_option,
    local_time,
    make_table,
    stdout_console,
)
from trainhooks._cli._resolve import (
    basename_for,
    checkpoints_in,
    no_checkpoints_error,
    reading,
    resolve_checkpoint,
    resolve_run_directory,
)


@click.command("prune")
@click.argument("directory", metavar="DIR")
@click.option(
    "--keep",
    "keep",
    type=click.IntRange(min=1),
    required=True,
    metavar="N",
    help="How many of the newest valid checkpoints to keep (at least 1).",
)
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@json_option
def prune(directory: str, keep: int, dry_run: bool, as_json: bool) -> int:
    """Delete all but the newest N checkpoints in DIR, crash-safely.

    Damaged checkpoints are left alone for inspection; the newest valid checkpoint is
    never deleted. Fails (exit 3) while a training run holds DIR's writer lock.
    """
    path = resolve_run_directory(directory, allow_checkpoint=False)
    before = checkpoints_in(path)
    if not before:
        raise no_checkpoints_error(directory)
    removed = trainhooks.prune_checkpoints(path, keep, dry_run=dry_run, basename=basename_for(path))
    gone = {resolved(info.path) for info in removed}
    kept = [info for info in before if resolved(info.path) not in gone]
    if as_json:
        emit_json(
            {
                "dry_run": dry_run,
                "removed": [info_json(i) for i in removed],
                "kept": [info_json(i) for i in kept],
            }
        )
        return 0
    console = stdout_console()
    verb = "would remove" if dry_run else "removed"
    if removed:
        table = make_table(
            f"{verb} {len(removed)} of {len(before)} checkpoints in {path}",
            ("name", "left"),
            ("step", "right"),
            ("saved", "left"),
            ("size", "right"),
        )
        for info in removed:
            table.add_row(
                Text(info.path.name),
                str(info.step),
                local_time(info.time),
                human_bytes(info.nbytes),
            )
        console.print(table)
    else:
        console.print(f"nothing to remove: {len(before)} checkpoints, keeping {keep}")
    freed = human_bytes(sum(info.nbytes for info in removed))
    steps = ", ".join(str(info.step) for info in kept)
    console.print(f"{'would free' if dry_run else 'freed'} {freed}; kept steps: {steps}")
    return 0


@click.command("export")
@click.argument("checkpoint", metavar="CKPT")
@click.argument("output", metavar="OUT.safetensors")
@click.option(
    "--only",
    metavar="ENTRY",
    help="Export only this entry of the state (e.g. model), named as its state_dict() names it.",
)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@json_option
def export(checkpoint: str, output: str, only: str | None, force: bool, as_json: bool) -> int:
    """Write CKPT as one standalone .safetensors file OUT.

    Tensor names are the flat names `show` prints; the state tree and checkpoint facts go
    into the file's __metadata__. With --only ENTRY (e.g. model) only that entry is written,
    its tensors named relative to it, so model.load_state_dict(load_file(OUT)) works.
    CKPT may be a run directory (its newest checkpoint); OUT may be a directory (the file
    is named after the checkpoint). Either may be a URL (s3://bucket/prefix/...); an OUT
    URL ending in / is a directory.
    """
    target = resolve_checkpoint(checkpoint)
    out = place_of(output)
    if is_dir(out) or (output.endswith("/") and not isinstance(out, Path)):
        out = out / f"{resolved(target.path).name}.safetensors"
    if exists(out) and not force:
        raise CliError(f"{out} exists; pass --force to replace it", EXIT_USAGE)
    if isinstance(out, Path) and not out.parent.is_dir():
        raise CliError(f"no such directory: {out.parent}", EXIT_USAGE)
    try:
        with reading(target.path):
            written = trainhooks.export_safetensors(target.path, out, only=only)
    except (trainhooks.StateMismatchError, ValueError) as exc:  # --only names no entry
        raise CliError(str(exc), EXIT_USAGE) from None
    nbytes = size_of(written)
    if as_json:
        emit_json(
            {
                "checkpoint": target.to_json(),
                "output": str(written),
                "nbytes": nbytes,
                "only": only,
            }
        )
        return 0
    step = f"step {target.info.step} " if target.info is not None else ""
    stdout_console().print(f"exported {step}{target.path} -> {written} ({human_bytes(nbytes)})")
    return 0
