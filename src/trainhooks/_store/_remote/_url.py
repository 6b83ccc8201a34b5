"""Telling a URL from a local path, and naming objects inside a URL.

A checkpoint directory given as ``scheme://...`` goes to object storage, except ``file://``,
which is the local path it names and keeps the local store's exact code path. Everything
else (str or ``os.PathLike``) is a local path, as before.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

__all__ = ["ObjectPath", "as_url", "checkpoint_location", "local_path"]

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)


class ObjectPath(PurePosixPath):
    """A checkpoint's place in object storage: a pure path whose ``str`` is its URL.

    ``name``, ``parent`` and ``/`` work as on a local path, so code that names
    checkpoints by their last component treats both alike; ``str(p)`` and
    ``os.fspath(p)`` give ``s3://bucket/prefix/ckpt-000000000100``.
    """

    def __str__(self) -> str:
        text = super().__str__()
        scheme, _, rest = text.partition(":/")
        return f"{scheme}://{rest}"

    def __fspath__(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"


def as_url(location: object) -> str | None:
    """The normalized URL of ``location`` when it names object storage, else None
    (``file://`` URLs and plain paths are local)."""
    if isinstance(location, ObjectPath):
        return str(location)
    if not isinstance(location, str):
        return None
    match = _SCHEME.fullmatch(location)
    if match is None or match.group(1).lower() == "file":
        return None
    scheme, rest = match.group(1).lower(), match.group(2).strip("/")
    return f"{scheme}://{rest}"


def local_path(location: str | os.PathLike[str]) -> Path:
    """A location :func:`as_url` found local, as a ``Path`` (``file://`` stripped)."""
    if isinstance(location, str) and location.lower().startswith("file://"):
        return Path(location[len("file://") :])
    return Path(location)


def checkpoint_location(location: str | os.PathLike[str]) -> Path | ObjectPath:
    """Where a ``checkpoint_dir`` argument points: an ``ObjectPath`` for a URL, else a
    ``Path`` (what sessions and hooks keep, so a URL is never mangled into a path)."""
    url = as_url(location)
    return ObjectPath(url) if url is not None else local_path(location)
