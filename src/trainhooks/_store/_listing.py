"""Finding the checkpoints of a directory: in step order for listing, in commit order for
"the newest".

A checkpoint is named for its step, but "newest" means committed last: after a rollback
(``restore(step=8)``, then ``save(step=9)``) the highest step belongs to an abandoned
branch. Each manifest carries its commit's ``sequence`` in the directory, so the readers
that want the newest read every candidate's manifest (kilobytes; no data file is opened)
to order them, then check them in full newest first. Entries are only ever read through
their names as committed checkpoints, never through a symlink.
"""

from __future__ import annotations

import os
from pathlib import Path

from trainhooks._exceptions import CheckpointError, CheckpointNotFoundError
from trainhooks._store._info import CheckpointInfo, newest_first_key
from trainhooks._store._layout import DEFAULT_BASENAME, parse_committed
from trainhooks._store._reader import CheckpointReader
from trainhooks._store._remote._url import as_url, local_path

__all__ = [
    "commits_newest_first",
    "committed_paths",
    "latest_checkpoint",
    "list_checkpoints",
    "next_sequence",
    "ordered_commits",
    "scan_checkpoints",
]


def _committed_entries(directory: str | os.PathLike[str], basename: str) -> list[tuple[int, Path]]:
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for entry in entries:
        step = parse_committed(entry.name, basename)
        if step is not None and entry.is_dir(follow_symlinks=False):
            found.append((step, Path(entry.path)))
    return found


def committed_paths(
    directory: str | os.PathLike[str], basename: str = DEFAULT_BASENAME
) -> list[Path]:
    """Directories named like committed checkpoints (not yet validated), highest step first."""
    return [path for _, path in sorted(_committed_entries(directory, basename), reverse=True)]


def commits_newest_first(
    directory: str | os.PathLike[str], basename: str = DEFAULT_BASENAME
) -> list[Path]:
    """Directories named like committed checkpoints, the last committed first.

    Ordered by the ``sequence`` in each manifest (then by step: checkpoints written before
    sequences existed count as older than any with one, and among themselves by step). A
    checkpoint whose manifest cannot be read comes first: it may be the newest, and a
    reader that needs the newest should try it, fail, and say so. One deleted meanwhile
    is left out.
    """
    return ordered_commits(directory, basename)[0]


def ordered_commits(directory: str | os.PathLike[str], basename: str) -> tuple[list[Path], bool]:
    """:func:`commits_newest_first`, and whether an entry vanished while its manifest was
    read (a writer's retention deleting it): then an empty list does not mean "none"."""
    ordered: list[tuple[tuple[int, int, int], Path]] = []
    vanished = False
    for step, path in _committed_entries(directory, basename):
        try:
            with CheckpointReader(path, follow_symlinks=False, data_files=False) as reader:
                ordered.append((newest_first_key(step, reader.manifest.sequence), path))
        except CheckpointNotFoundError:
            vanished = True
        except CheckpointError:
            ordered.append((newest_first_key(step, None), path))
    ordered.sort(reverse=True)
    return [path for _, path in ordered], vanished


def next_sequence(directory: str | os.PathLike[str], basename: str = DEFAULT_BASENAME) -> int:
    """The commit number after the highest in ``directory`` (1 in an empty one), from the
    manifests alone; for a writer holding the directory's lock that keeps no count itself."""
    highest = 0
    for _, path in _committed_entries(directory, basename):
        try:
            with CheckpointReader(path, follow_symlinks=False, data_files=False) as reader:
                highest = max(highest, reader.manifest.sequence)
        except CheckpointError:
            continue
    return highest + 1


def scan_checkpoints(
    directory: str | os.PathLike[str], basename: str = DEFAULT_BASENAME
) -> tuple[list[CheckpointInfo], list[CheckpointError]]:
    """Every committed checkpoint in ``directory`` that passes the structure check, by step,
    and the errors of those that do not."""
    valid: list[CheckpointInfo] = []
    broken: list[CheckpointError] = []
    for path in committed_paths(directory, basename):
        try:
            with CheckpointReader(path, follow_symlinks=False) as reader:
                valid.append(reader.info)
        except CheckpointNotFoundError:
            continue  # deleted by a writer's retention while we looked: not an error
        except CheckpointError as exc:  # corrupt, unknown format, unreadable
            broken.append(exc)
    valid.sort(key=lambda info: info.step)
    return valid, broken


def list_checkpoints(
    directory: str | os.PathLike[str], *, basename: str = DEFAULT_BASENAME
) -> list[CheckpointInfo]:
    """Committed, structurally valid checkpoints in ``directory`` (a path or a URL such as
    ``s3://bucket/prefix``), oldest step first (each with its commit ``sequence``: after a
    rollback the last one is not the newest)."""
    if (url := as_url(directory)) is not None:
        from trainhooks._store._remote import _api

        return _api.list_checkpoints(url, basename)
    return scan_checkpoints(local_path(directory), basename)[0]


def latest_checkpoint(
    directory: str | os.PathLike[str], *, basename: str = DEFAULT_BASENAME
) -> CheckpointInfo | None:
    """The newest (last committed) structurally valid checkpoint, or None only when there
    is none at all.

    Reads every candidate's manifest to order them (see :func:`commits_newest_first`),
    then checks them in full newest first and stops at the first valid one. A URL is read
    through the object store, in the same order (one listing, one manifest read each).
    """
    if (url := as_url(directory)) is not None:
        from trainhooks._store._remote import _api

        return _api.latest_checkpoint(url, basename)
    directory = local_path(directory)
    # A writer's retention may delete every checkpoint of one listing while we read them
    # (it commits newer ones first), so a listing whose entries vanished is taken again;
    # only a listing with nothing deleted under it can answer None.
    while True:
        paths, vanished = ordered_commits(directory, basename)
        for path in paths:
            try:
                with CheckpointReader(path, follow_symlinks=False) as reader:
                    return reader.info
            except CheckpointNotFoundError:  # deleted while we looked: list again
                vanished = True
            except CheckpointError:  # damaged or unreadable: try the next one
                continue
        if not vanished:
            return None
