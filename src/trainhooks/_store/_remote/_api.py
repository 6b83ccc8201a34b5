"""The public store functions for URLs: what ``list_checkpoints``, ``latest_checkpoint``,
``checkpoint_info``, ``verify_checkpoint`` and ``prune_checkpoints`` do when given
``s3://...`` (or any fsspec URL). Credentials and endpoints come from the environment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainhooks._exceptions import CheckpointError, CheckpointWriteError
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._remote._layout import LEASE_OBJECT
from trainhooks._store._remote._lease import Lease
from trainhooks._store._remote._objects import open_objects
from trainhooks._store._remote._reader import RemoteCheckpointReader, committed_checkpoints
from trainhooks._store._remote._writer import clean_leftovers, remove_step, scan

__all__ = [
    "checkpoint_info",
    "committed_names",
    "committed_readers",
    "latest_checkpoint",
    "list_checkpoints",
    "prune_checkpoints",
    "verify_checkpoint",
]

Options = dict[str, Any] | None


def list_checkpoints(
    url: str, basename: str, storage_options: Options = None
) -> list[CheckpointInfo]:
    objects, root = open_objects(url, storage_options)
    return scan(objects, url, root, basename, storage_options)[0]


def committed_readers(
    url: str, basename: str, storage_options: Options = None
) -> list[Callable[[], RemoteCheckpointReader]]:
    """Openers of the prefixes holding a manifest, newest first, from one listing."""
    objects, root = open_objects(url, storage_options)
    found = committed_checkpoints(objects, root, basename)

    def opener(name: str, sizes: dict[str, int]) -> Callable[[], RemoteCheckpointReader]:
        return lambda: RemoteCheckpointReader(
            f"{url}/{name}", storage_options=storage_options, listing=sizes
        )

    return [opener(name, sizes) for _, name, sizes in found]


def committed_names(url: str, basename: str, storage_options: Options = None) -> list[str]:
    """Names of the prefixes under ``url`` holding a manifest, newest first."""
    objects, root = open_objects(url, storage_options)
    return [name for _, name, _ in committed_checkpoints(objects, root, basename)]


def latest_checkpoint(
    url: str, basename: str, storage_options: Options = None
) -> CheckpointInfo | None:
    for open_reader in committed_readers(url, basename, storage_options):
        try:
            return open_reader().info
        except CheckpointError:
            continue
    return None


def checkpoint_info(url: str, storage_options: Options = None) -> CheckpointInfo:
    return RemoteCheckpointReader(url, storage_options=storage_options).info


def verify_checkpoint(
    url: str, progress: Callable[[int, int], None] | None = None, storage_options: Options = None
) -> CheckpointInfo:
    return RemoteCheckpointReader(url, storage_options=storage_options).verify(progress)


def prune_checkpoints(
    url: str, keep: int, dry_run: bool, basename: str, storage_options: Options = None
) -> list[CheckpointInfo]:
    """Delete all but the newest ``keep`` valid checkpoints under the lease."""
    objects, root = open_objects(url, storage_options)
    if dry_run:
        return scan(objects, url, root, basename, storage_options)[0][:-keep]
    lease = Lease(objects, f"{root}/{LEASE_OBJECT}", url)
    try:
        victims = scan(objects, url, root, basename, storage_options)[0][:-keep]
        for info in victims:
            remove_step(objects, root, basename, info.step)
        clean_leftovers(objects, root, basename)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointWriteError(
            f"pruning {url} failed: {exc}; every checkpoint not yet removed is intact", path=url
        ) from exc
    finally:
        lease.release()
    return victims
