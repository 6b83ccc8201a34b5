"""A command-line argument as a place: a local path, or a URL in object storage.

The commands ask of a place what a shell asks of a path (does it exist, is it a
directory or a file, what sub-directories does it hold) and pass it on to the public API,
which takes both. A URL is an ``ObjectPath`` (``str`` gives the URL back, ``name`` and
``parent`` work as on a path); ``file://`` URLs are the local paths they name. On object
storage a "directory" is a prefix that holds objects and a "file" is an object; each
question is one fresh listing, so a command sees what a running job just wrote or removed.
Credentials and the endpoint come from the environment (for S3 the ``AWS_*`` variables,
``AWS_ENDPOINT_URL`` included), as for any boto client.
"""

from __future__ import annotations

import os
from pathlib import Path

from trainhooks._store._remote._browse import RemoteEntry, look
from trainhooks._store._remote._url import ObjectPath, checkpoint_location

__all__ = [
    "Place",
    "absolute",
    "candidate_dirs",
    "exists",
    "is_dir",
    "is_file",
    "place_of",
    "resolved",
    "size_of",
    "subdirectories",
]

Place = Path | ObjectPath


def place_of(arg: str | os.PathLike[str]) -> Place:
    """What a command-line argument names (``~`` expanded on local paths)."""
    location = checkpoint_location(arg)
    return location if isinstance(location, ObjectPath) else location.expanduser()


def _look(place: ObjectPath) -> RemoteEntry:
    return look(str(place))


def exists(place: Place) -> bool:
    return _look(place).exists if isinstance(place, ObjectPath) else place.exists()


def is_dir(place: Place) -> bool:
    """A local directory, or a prefix holding at least one object."""
    return _look(place).is_prefix if isinstance(place, ObjectPath) else place.is_dir()


def is_file(place: Place) -> bool:
    """A local file, or an object (a name that is both is taken as the prefix)."""
    if isinstance(place, ObjectPath):
        entry = _look(place)
        return entry.is_object and not entry.is_prefix
    return place.is_file()


def resolved(place: Place) -> Place:
    """Symlinks and ``..`` resolved on a local path; a URL is already canonical."""
    return place if isinstance(place, ObjectPath) else place.resolve()


def absolute(place: Place) -> Place:
    return place if isinstance(place, ObjectPath) else place.absolute()


def subdirectories(place: Place, *, follow_symlinks: bool = False) -> list[Place]:
    """The directories (prefixes) directly inside ``place``, by name; none if it is missing."""
    if isinstance(place, ObjectPath):
        return [place / name for name in _look(place).children]
    try:
        entries = sorted(os.scandir(place), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=follow_symlinks)]


def candidate_dirs(place: Place) -> list[Place]:
    """The directories inside ``place`` that may be checkpoints, by name: locally every
    sub-directory (staging has its own ``.tmp-`` names); in object storage the prefixes
    holding a manifest, since one without is an upload that never committed (the next
    writer deletes it), no more a checkpoint than a local staging directory."""
    if isinstance(place, ObjectPath):
        return [place / name for name in _look(place).committed]
    return subdirectories(place)


def size_of(place: Place) -> int:
    """The size of a file or object in bytes."""
    if isinstance(place, ObjectPath):
        return _look(place).size or 0
    return place.stat().st_size
