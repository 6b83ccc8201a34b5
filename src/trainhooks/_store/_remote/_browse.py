"""Looking at a URL the way a shell looks at a path: is something there, is it one object
or a prefix holding others, which prefixes sit directly under it.

For the command line, which accepts whatever URL a user types and must answer "no such
bucket" or "no credentials" in one line rather than a traceback: every failure of the
service becomes a :class:`CheckpointError` naming the URL and the cause (never a
credential: the services' messages do not carry them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainhooks._exceptions import CheckpointError
from trainhooks._store._layout import MANIFEST_FILE
from trainhooks._store._remote._objects import open_objects

__all__ = ["RemoteEntry", "look", "service_error"]


@dataclass(frozen=True)
class RemoteEntry:
    """What is at a URL: an object (``size``), a prefix (``children``: the names of the
    prefixes directly under it, sorted; ``committed``: those of them holding a manifest),
    or nothing (neither)."""

    is_object: bool
    is_prefix: bool
    size: int | None
    children: tuple[str, ...]
    committed: tuple[str, ...]

    @property
    def exists(self) -> bool:
        return self.is_object or self.is_prefix


def look(url: str, storage_options: dict[str, Any] | None = None) -> RemoteEntry:
    """One fresh listing of ``url``: what is there (a missing bucket is nothing)."""
    try:
        objects, root = open_objects(url, storage_options)
        listing = objects.list(root)
    except CheckpointError:
        raise
    except ImportError as exc:  # fsspec or the service's package is not installed
        text = str(exc) if url in str(exc) else f"{url}: {exc}"
        raise CheckpointError(text, path=url) from exc
    except Exception as exc:
        raise service_error(url, exc) from exc
    size = listing.get(root)
    children, committed = set(), set()
    for path in listing:
        if path.startswith(root + "/"):
            name, _, rest = path[len(root) + 1 :].partition("/")
            if rest:
                children.add(name)
            if rest == MANIFEST_FILE:
                committed.add(name)
    is_prefix = any(path.startswith(root + "/") for path in listing)
    return RemoteEntry(
        size is not None, is_prefix, size, tuple(sorted(children)), tuple(sorted(committed))
    )


def service_error(url: str, exc: BaseException) -> CheckpointError:
    """A failure to reach ``url`` (credentials, endpoint, permissions) as one error naming it."""
    cause = " ".join(str(exc).split()) or type(exc).__name__
    hint = ""
    if type(exc).__name__ in {"NoCredentialsError", "PartialCredentialsError"}:
        hint = " (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
    elif type(exc).__name__ == "EndpointConnectionError":
        hint = " (check AWS_ENDPOINT_URL)"
    return CheckpointError(f"cannot reach {url}: {type(exc).__name__}: {cause}{hint}", path=url)
