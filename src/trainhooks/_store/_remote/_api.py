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
from trainhooks._store._remote._reader import RemoteCheckpointReader, commits_newest_first
from trainhooks._store._remote._writer import clean_leftovers, remove_step, scan
from trainhooks._store._writer import all_but_newest

__all__ = [
    "checkpoint_info",
    "committed_names",
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


def committed_names(url: str, basename: str, storage_options: Options = None) -> list[str]:
    """Names of the prefixes under ``url`` holding a manifest, the last committed first
    (after a rollback not the highest step): one listing and one manifest read each."""
    objects, root = open_objects(url, storage_options)
    return [c.name for c in commits_newest_first(objects, url, root, basename, storage_options)]


def latest_checkpoint(
    url: str, basename: str, storage_options: Options = None
) -> CheckpointInfo | None:
    """The last committed structurally valid checkpoint: the manifests order the
    candidates, then data objects are checked newest first until one passes."""
    objects, root = open_objects(url, storage_options)
    for commit in commits_newest_first(objects, url, root, basename, storage_options):
        try:
            return commit.open(storage_options).info
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
    """Delete all but the ``keep`` newest (last committed) valid checkpoints under the
    lease; return them in step order."""
    objects, root = open_objects(url, storage_options)
    if dry_run:
        return all_but_newest(scan(objects, url, root, basename, storage_options)[0], keep)
    lease = Lease(objects, f"{root}/{LEASE_OBJECT}", url)
    try:
        victims = all_but_newest(scan(objects, url, root, basename, storage_options)[0], keep)
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
