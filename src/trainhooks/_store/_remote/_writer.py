"""The writer of a checkpoint prefix in object storage: lease, retention, leftovers.

The counterpart of ``_store/_writer.py``'s ``DirectoryWriter``, with the same retention
policy, record and commit numbering (``plan_retention``, ``recover_record``: the victims
of a save and its commit ``sequence`` are written into its manifest before its commit,
and a new writer continues from the newest commit's record). Opening takes the lease, deletes what a
crashed writer left (data objects no manifest names, half-deleted checkpoints) and aborts
its unfinished multipart uploads. Deleting a checkpoint removes its manifest first, so a
half-deleted checkpoint is never listed; the rest is removed at once, or by the next writer.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from trainhooks._exceptions import CheckpointError, CheckpointFormatError, CheckpointWriteError
from trainhooks._store._commit import TensorSource
from trainhooks._store._faults import fault_point
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import MANIFEST_FILE, committed_name
from trainhooks._store._manifest import Manifest, ManifestError
from trainhooks._store._remote._commit import upload_checkpoint
from trainhooks._store._remote._layout import LEASE_OBJECT, checkpoint_prefix, split_object
from trainhooks._store._remote._lease import Lease
from trainhooks._store._remote._objects import ObjectStore, open_objects, parallel
from trainhooks._store._remote._reader import RemoteCheckpointReader, committed_checkpoints
from trainhooks._store._writer import (
    RetentionPolicy,
    RetentionRecord,
    plan_retention,
    recover_record,
)

__all__ = ["RemoteWriter", "clean_leftovers", "remove_step", "scan", "scan_readers"]


class RemoteWriter:
    """The one writer of ``url``, holding its lease until :meth:`close`."""

    def __init__(
        self,
        url: str,
        basename: str,
        policy: RetentionPolicy,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.url, self.basename, self.policy = url, basename, policy
        self.storage_options = storage_options
        self.closed = False
        self.objects, self.root = open_objects(url, storage_options)
        self.lease = Lease(self.objects, f"{self.root}/{LEASE_OBJECT}", url)
        try:
            clean_leftovers(self.objects, self.root, basename)
            self.record = self._recover()
        except BaseException as exc:
            self.lease.release()
            if isinstance(exc, Exception) and not isinstance(exc, CheckpointError):
                raise CheckpointWriteError(
                    f"cannot prepare {url} for writing: {type(exc).__name__}: {exc}", path=url
                ) from exc
            raise

    def commit(
        self,
        step: int,
        tensors: Sequence[TensorSource],
        tree: Any,
        metadata: dict[str, Any],
        *,
        cancel: threading.Event | None = None,
    ) -> CheckpointInfo:
        """Upload and commit a checkpoint at ``step`` carrying the retention plan, then
        delete the plan's victims (manifest first). ``cancel`` stops a background save
        before its commit point (see ``upload_checkpoint``)."""

        def write(plan: RetentionRecord, when: float) -> CheckpointInfo:
            return upload_checkpoint(
                self.objects,
                self.url,
                self.root,
                self.basename,
                step,
                tensors,
                tree,
                metadata,
                when=when,
                retention=plan.to_json(),
                sequence=plan.sequence,
                cancel=cancel,
            )

        return self.commit_with(step, write)

    def commit_with(
        self, step: int, write: Callable[[RetentionRecord, float], CheckpointInfo]
    ) -> CheckpointInfo:
        """Plan retention for a commit at ``step``, let ``write(plan, when)`` commit a
        checkpoint carrying that plan (a single-process upload, or the manifest of a
        sharded save whose shards other processes uploaded), then delete the plan's
        victims, manifest first."""
        self.lease.check()
        when = time.time()
        plan = plan_retention(self.record, step, when, self.policy)
        try:
            info = write(plan, when)
        except CheckpointFormatError:
            raise  # refused before anything was sent: the number is free
        except BaseException:
            # A manifest create whose answer was lost may have committed all the same:
            # never hand its number to another commit (numbers need not be dense).
            self.record = dataclasses.replace(self.record, sequence=plan.sequence)
            raise
        # the number the manifest carries (a sharded commit may number it itself)
        self.record = dataclasses.replace(plan, sequence=info.sequence or plan.sequence)
        for victim in plan.delete:
            try:
                remove_step(self.objects, self.root, self.basename, victim)
            except Exception as exc:
                raise CheckpointWriteError(
                    f"retention could not delete the checkpoint of step {victim} in "
                    f"{self.url}: {exc}; the new checkpoint is committed and the next save "
                    "retries the deletion",
                    path=self.url,
                    step=victim,
                ) from exc
        self.record = dataclasses.replace(self.record, delete=())
        return info

    def close(self) -> None:
        """Release the lease; safe to call twice."""
        if not self.closed:
            self.closed = True
            self.lease.release()

    def _recover(self) -> RetentionRecord:
        """Continue the retention and numbering of the newest commit (``recover_record``)."""
        readers, _ = scan_readers(
            self.objects, self.url, self.root, self.basename, self.storage_options
        )
        retention = {str(reader.path): reader.manifest.retention for reader in readers}
        return recover_record(
            [reader.info for reader in readers],
            lambda info: retention[str(info.path)],
            self.policy,
        )


def scan(
    objects: ObjectStore,
    url: str,
    root: str,
    basename: str,
    storage_options: dict[str, Any] | None = None,
) -> tuple[list[CheckpointInfo], list[CheckpointError]]:
    """Structurally valid checkpoints under ``root`` by step, and the errors of the others."""
    readers, broken = scan_readers(objects, url, root, basename, storage_options)
    return [reader.info for reader in readers], broken


def scan_readers(
    objects: ObjectStore,
    url: str,
    root: str,
    basename: str,
    storage_options: dict[str, Any] | None = None,
) -> tuple[list[RemoteCheckpointReader], list[CheckpointError]]:
    """:func:`scan`, as the readers of the valid checkpoints (their manifests read): one
    listing, then each checkpoint's manifest and header, checkpoints in parallel."""

    def check(found: tuple[int, str, dict[str, int]]) -> RemoteCheckpointReader | CheckpointError:
        _, name, sizes = found
        try:
            return RemoteCheckpointReader(
                f"{url}/{name}", storage_options=storage_options, listing=sizes
            )
        except CheckpointError as exc:
            return exc

    checked = parallel(check, committed_checkpoints(objects, root, basename), "trainhooks-scan")
    readers = [r for r in checked if isinstance(r, RemoteCheckpointReader)]
    readers.sort(key=lambda reader: reader.manifest.step)
    return readers, [r for r in checked if isinstance(r, CheckpointError)]


def remove_step(objects: ObjectStore, root: str, basename: str, step: int) -> bool:
    """Delete the checkpoint of ``step``: its manifest first (it stops being listed at
    once), then its data. False when it was already gone."""
    prefix = checkpoint_prefix(root, basename, step)
    paths = list(objects.list(prefix))
    manifest = f"{prefix}/{MANIFEST_FILE}"
    if manifest not in paths:
        return False
    objects.delete([manifest])
    fault_point("remote_retention_after_manifest")
    objects.delete([p for p in paths if p != manifest and split_object(root, p, basename)])
    return True


def clean_leftovers(objects: ObjectStore, root: str, basename: str) -> list[str]:
    """Delete objects a crashed writer left (hold the lease): data objects of prefixes
    without a manifest or that their manifest does not name; abort its pending uploads."""
    groups: dict[int, list[str]] = {}
    for path in objects.list(root):
        parsed = split_object(root, path, basename)
        if parsed is not None:
            groups.setdefault(parsed[0], []).append(path)
    removed: list[str] = []
    for step, paths in groups.items():
        prefix = f"{root}/{committed_name(basename, step)}"
        manifest = f"{prefix}/{MANIFEST_FILE}"
        data = [p for p in paths if p != manifest]
        if manifest in paths:
            if len(data) <= 1:
                continue  # the usual committed checkpoint
            named = _named_files(objects, manifest)
            if named is None:
                continue  # a corrupt manifest: keep everything for inspection
            data = [p for p in data if p.rpartition("/")[2] not in named]
        objects.delete(data)
        removed += data
    objects.abort_uploads(root, lambda path: split_object(root, path, basename) is not None)
    return removed


def _named_files(objects: ObjectStore, manifest: str) -> set[str] | None:
    try:
        return set(Manifest.from_bytes(objects.read(manifest, 0, 1 << 28)).files)
    except ManifestError:
        return None
