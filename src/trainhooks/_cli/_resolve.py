"""Turning command-line paths into checkpoints and checkpoint directories, forgivingly.

Users type whatever path is at hand: the run directory, one checkpoint inside it, or a
file inside that checkpoint. Commands that need ONE checkpoint accept all three (a run
directory means its newest checkpoint, and a note on stderr says so); commands that need
a run directory accept a checkpoint and use its parent where that is harmless.

Only the public API reads checkpoints. The one private thing used here is the naming rule
of ``trainhooks._store._layout`` (``<basename>-<step:012d>``, fixed by docs/format.md): it
lets ``verify DIR`` find a damaged checkpoint that ``list_checkpoints`` leaves out, and
tells a damaged checkpoint (exit 1) from a directory that never was one (exit 2).

Why it is not made public: only a tool that looks at damaged directories needs it. Code
that trains or restores names checkpoints through ``Saver`` and ``CheckpointInfo`` and
never parses a directory name; a public parser would be a second, code-level promise of
what the format document already fixes, and would grow the API for one internal caller.
The CLI ships and is versioned with the store, so it may follow the rule where it lives.

Every argument may also be a URL (``s3://bucket/prefix``): ``_places`` answers the same
questions of it through one listing each, so the rules above hold on object storage too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import trainhooks
from trainhooks._cli._errors import EXIT_CORRUPT, EXIT_USAGE, CliError
from trainhooks._cli._places import (
    Place,
    absolute,
    candidate_dirs,
    exists,
    is_dir,
    is_file,
    place_of,
    resolved,
    subdirectories,
)
from trainhooks._cli._render import info_json, note, plural
from trainhooks._store._layout import DEFAULT_BASENAME, split_committed

if TYPE_CHECKING:
    from trainhooks import CheckpointInfo


@dataclass(frozen=True)
class Resolved:
    """One checkpoint chosen from a command-line path.

    ``info`` is None when the directory is not in its parent's listing (a damaged or
    foreign directory): the store decides, when it reads it, what is wrong with it.
    """

    path: Place
    info: CheckpointInfo | None

    def to_json(self) -> dict[str, Any]:
        """The checkpoint a result is about, as JSON (only its path if it is not listed)."""
        return {"path": str(absolute(self.path))} if self.info is None else info_json(self.info)


def committed_basename(name: str) -> str | None:
    """The basename of a directory named like a committed checkpoint, else None."""
    parsed = split_committed(name)
    return parsed[0] if parsed else None


def existing_path(arg: str) -> Place:
    """``arg`` as a place, or a one-line usage error if nothing is there."""
    path = place_of(arg)
    if not exists(path):
        if isinstance(path, Path):
            raise CliError(f"no such file or directory: {arg}", EXIT_USAGE)
        raise CliError(f"nothing at {arg}: no such bucket, or no object under it", EXIT_USAGE)
    return path


def basename_for(directory: Place) -> str:
    """The checkpoint basename in ``directory``: ``--basename``, else detected.

    ``ckpt`` (the Saver's default) when any ``ckpt-*`` entry exists; otherwise the single
    basename the committed-looking entries share, so ``Saver(basename="model")`` runs
    work without an option.
    """
    ctx = click.get_current_context(silent=True)
    chosen = ctx.find_root().params.get("basename") if ctx is not None else None
    if chosen:
        return str(chosen)
    found = set(candidates_in(directory))
    if DEFAULT_BASENAME in found or not found:
        return DEFAULT_BASENAME
    if len(found) == 1:
        return found.pop()
    names = ", ".join(sorted(found))
    raise CliError(
        f"{directory} holds checkpoints of several basenames ({names}); choose one with --basename",
        EXIT_USAGE,
    )


def candidates_in(directory: Place) -> dict[str, list[Place]]:
    """Sub-directories named like committed checkpoints, by basename (listed or not)."""
    found: dict[str, list[Place]] = {}
    for entry in candidate_dirs(directory):
        base = committed_basename(entry.name)
        if base is not None:
            found.setdefault(base, []).append(entry)
    return found


def checkpoints_in(directory: Place) -> list[CheckpointInfo]:
    """The committed, structurally valid checkpoints directly inside ``directory``."""
    if not is_dir(directory):
        return []
    return list(trainhooks.list_checkpoints(directory, basename=basename_for(directory)))


def listing_entry(path: Place) -> CheckpointInfo | None:
    """The parent's listing entry for the checkpoint directory ``path``, if it has one
    (named like a committed checkpoint and structurally valid)."""
    target = resolved(path)
    if committed_basename(target.name) is None or not is_dir(target):
        return None
    try:
        return trainhooks.checkpoint_info(target)
    except trainhooks.CheckpointError:
        return None


def newest_in(directory: Place, infos: list[CheckpointInfo]) -> CheckpointInfo:
    """The newest (last committed) valid checkpoint of the store's listing ``infos``: after
    a rollback not the highest step, as ``Saver.restore()`` would resume."""
    return max(infos, key=lambda info: info.commit_order)


def resolve_checkpoint(arg: str) -> Resolved:
    """One checkpoint from a checkpoint path, a file inside one, or a run directory."""
    path = existing_path(arg)
    if is_file(path):
        parent = resolved(path).parent
        if committed_basename(parent.name) is None:
            raise CliError(
                f"{arg} is a file, not a checkpoint: pass a checkpoint directory "
                "(e.g. RUN/ckpt-000000000100) or a directory of checkpoints",
                EXIT_USAGE,
            )
        note(f"{arg} is a file inside a checkpoint; using the checkpoint {parent}")
        return Resolved(parent, listing_entry(parent))
    info = listing_entry(path)
    if info is not None or committed_basename(resolved(path).name) is not None:
        return Resolved(path, info)  # unlisted: damaged; reading it names the damage
    infos = checkpoints_in(path)
    if not infos:
        if candidates_in(path):
            raise no_checkpoints_error(arg)
        return Resolved(path, None)  # perhaps a checkpoint under a foreign name
    newest = newest_in(path, infos)
    listed = {info.path.name for info in infos}
    skipped = [
        p.name
        for p in candidates_in(path).get(basename_for(path), [])
        if p.name not in listed and p.name > newest.path.name
    ]
    damaged = f" (newer but damaged: {', '.join(skipped)})" if skipped else ""
    note(f"{arg} is a directory of checkpoints; using the newest, step {newest.step}{damaged}")
    return Resolved(newest.path, newest)


def resolve_run_directory(arg: str, *, allow_checkpoint: bool) -> Place:
    """A directory of checkpoints; a checkpoint path means its parent where allowed."""
    path = existing_path(arg)
    if not is_dir(path):
        raise CliError(f"{arg} is not a directory", EXIT_USAGE)
    if committed_basename(resolved(path).name) is not None and listing_entry(path) is not None:
        parent = resolved(path).parent
        if not allow_checkpoint:
            raise CliError(
                f"{arg} is a single checkpoint, not a directory of checkpoints; "
                f"did you mean {parent}?",
                EXIT_USAGE,
            )
        note(f"{arg} is a checkpoint; using its directory {parent}")
        return parent
    return path


def no_checkpoints_error(arg: str) -> CliError:
    """The error for a directory without a valid checkpoint, saying which case it is."""
    path = place_of(arg)
    damaged = candidates_in(path)
    if damaged:
        count = sum(len(paths) for paths in damaged.values())
        return CliError(
            f"no valid checkpoint in {arg}: its {plural(count, 'checkpoint')} "
            f"{'is' if count == 1 else 'are'} damaged or incomplete "
            f"(`trainhooks verify {arg}` names the damage)",
            EXIT_CORRUPT,
        )
    return CliError(f"no checkpoints in {arg}{_nested_hint(path)}", EXIT_USAGE)


def _nested_hint(path: Place, limit: int = 5) -> str:
    """``; sub-directories with checkpoints: A, B`` when the user pointed one level too high."""
    try:
        subdirs = [e for e in subdirectories(path, follow_symlinks=True) if e.name[:1] != "."]
    except OSError:
        return ""
    runs = [sub for sub in subdirs if candidates_in(sub)]
    if not runs:
        return ""
    shown = ", ".join(str(run) for run in runs[:limit]) + (", ..." if len(runs) > limit else "")
    return f"; sub-directories with checkpoints: {shown}"


def not_a_checkpoint(path: Place, exc: BaseException) -> CliError | None:
    """A usage error if ``exc`` (from reading ``path``) means it was never a checkpoint.

    The store reports a directory that is not named like a checkpoint and has no manifest
    as not found: that is a usage error (exit 2), while a ``ckpt-000000000100`` without a
    readable manifest is corrupt (exit 1).
    """
    if not isinstance(exc, trainhooks.CheckpointNotFoundError) or not is_dir(path):
        return None
    return CliError(
        f"{path} is neither a checkpoint nor a directory of checkpoints{_nested_hint(path)}",
        EXIT_USAGE,
    )


@contextmanager
def reading(path: Place) -> Iterator[None]:
    """Around a store call on ``path``: turn "no manifest in a foreign directory" into exit 2."""
    try:
        yield
    except trainhooks.CheckpointNotFoundError as exc:
        usage = not_a_checkpoint(path, exc)
        if usage is not None:
            raise usage from exc
        raise
