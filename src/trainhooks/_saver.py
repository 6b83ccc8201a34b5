"""``Saver``: checkpoints a state mapping into a directory and restores it in place; ``load``.

The saver joins the two lower layers: the state layer turns objects into a JSON tree and
named tensors (and applies them back); the store commits them crash-safely, with one
``DirectoryWriter`` per directory saved into holding that directory's lock and retention
(TF's ``max_to_keep`` and ``keep_checkpoint_every_n_hours``).

``save_async`` is the same join with a copy in the middle: the state layer snapshots the
arrays into reusable staging buffers on the caller's thread, and the store's
``BackgroundWriter`` commits the snapshot on its worker thread.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from trainhooks._exceptions import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointFormatError,
    CheckpointNotFoundError,
    StateMismatchError,
)
from trainhooks._state._adapters._registry import new_array
from trainhooks._state._apply import apply_state
from trainhooks._state._decode import decode_tree, to_plain
from trainhooks._state._encode import encode_state
from trainhooks._state._mapped import MappedTensor
from trainhooks._state._staging import StagingBuffers
from trainhooks._store._background import BackgroundWriter, SaveFuture
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import DEFAULT_BASENAME, check_basename, committed_path
from trainhooks._store._reader import CheckpointReader, committed_paths
from trainhooks._store._writer import DirectoryWriter, RetentionPolicy

__all__ = ["Saver", "load"]


class Saver:
    """Saves and restores checkpoints of a state mapping (see the module docstring).

    ``max_to_keep=None`` (or 0) keeps every checkpoint. Of the checkpoints that fall out of
    the ``max_to_keep`` window, one is kept for good every ``keep_checkpoint_every_n_hours``
    (measured from the first saver's creation, as TF does, and carried across restarts).
    Retention survives crashes: its state is stored in each checkpoint's manifest, so the
    next writer finishes deletions a crash interrupted (see ``docs/design.md``).

    ``max_pending`` bounds :meth:`save_async`: at most that many snapshots are being
    written at once, each one copy of the state's arrays in host memory; a save due while
    they are all still writing waits for the oldest (the wait is logged).
    """

    def __init__(
        self,
        max_to_keep: int | None = 5,
        keep_checkpoint_every_n_hours: float = 10000.0,
        *,
        basename: str = DEFAULT_BASENAME,
        verify_on_restore: bool = True,
        max_pending: int = 1,
    ) -> None:
        if max_to_keep is not None and max_to_keep < 0:
            raise ValueError(f"max_to_keep must be None or >= 0, got {max_to_keep}")
        if keep_checkpoint_every_n_hours <= 0:
            raise ValueError("keep_checkpoint_every_n_hours must be positive")
        self.max_to_keep = max_to_keep or None
        self.keep_checkpoint_every_n_hours = keep_checkpoint_every_n_hours
        self.basename = check_basename(basename)
        self.verify_on_restore = verify_on_restore
        keep_every = keep_checkpoint_every_n_hours * 3600.0
        self._retention = RetentionPolicy(
            self.max_to_keep,
            keep_every,
            first_keep_time=time.time() + keep_every,  # TF: from the saver's creation
        )
        self._writers: dict[Path, DirectoryWriter] = {}
        self._background = BackgroundWriter(max_pending)  # starts no thread until used
        self._free_staging: list[StagingBuffers] = []  # buffers of no snapshot in flight

    # -- saving ---------------------------------------------------------------------
    def save(
        self,
        state: Mapping[str, Any],
        directory: str | os.PathLike[str],
        step: int,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> CheckpointInfo:
        """Durably commit a checkpoint of ``state`` at ``step`` in ``directory``, then apply
        retention. Returns only once the checkpoint survives a crash or power loss."""
        _check_step(step)
        metadata = _checked_metadata(metadata)
        self._background.drain()  # saves commit in the order they were made
        tree, tensors = encode_state(state)
        return self._writer_for(Path(directory).absolute(), step).commit(
            step, tensors, tree, metadata
        )

    def save_async(
        self,
        state: Mapping[str, Any],
        directory: str | os.PathLike[str],
        step: int,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> SaveFuture:
        """Snapshot ``state`` into host memory, then commit it as :meth:`save` does, on a
        background thread; the returned future resolves once the checkpoint is durable.

        Returns as soon as the arrays are copied (into staging buffers reused from save to
        save): the caller may change ``state`` at once. When ``max_pending`` saves are
        still being written, this first waits for the oldest. Errors of the snapshot
        (an unsupported value) raise here; errors of the write are raised, typed, by the
        future's ``result()``. Saves commit in the order they were made.
        """
        _check_step(step)
        private: dict[str, Any] = json.loads(json.dumps(_checked_metadata(metadata)))
        directory = Path(directory).absolute()
        writer = self._writer_for(directory, step)
        self._background.wait_for_slot(step)
        staging = self._free_staging.pop() if self._free_staging else StagingBuffers()
        staging.begin()
        try:
            tree, tensors = encode_state(state, staging)
        except BaseException:
            staging.abort()
            self._free_staging.append(staging)
            raise
        copies_landed = staging.finish()

        def commit(cancel: threading.Event) -> CheckpointInfo:
            copies_landed()
            return writer.commit(step, tensors, tree, private, cancel=cancel)

        return self._background.submit(
            SaveFuture(step, directory), commit, lambda: self._free_staging.append(staging)
        )

    def _writer_for(self, directory: Path, step: int) -> DirectoryWriter:
        writer = self._writers.get(directory)
        if writer is None or writer.closed:  # closed: its directory was removed or replaced
            writer = DirectoryWriter.open(directory, self.basename, self._retention, step)
            self._writers[directory] = writer
        return writer

    # -- restoring ------------------------------------------------------------------
    def restore(
        self,
        state: MutableMapping[str, Any],
        directory: str | os.PathLike[str],
        step: int | None = None,
        *,
        cast: bool = False,
        strict: bool = True,
    ) -> CheckpointInfo:
        """Restore ``state`` in place from the newest valid checkpoint (or ``step``).

        With ``step=None`` a corrupt newest checkpoint is reported with a warning and the
        next older valid one is used; with an explicit ``step`` corruption raises. Saves
        this saver still has in flight are waited for first, so a restore sees them.
        """
        self._background.drain()
        directory = Path(directory)
        if step is not None:
            return self._restore_from(
                committed_path(directory, self.basename, step), state, cast, strict
            )
        warned: set[str] = set()
        for _ in range(_RESCANS):  # a live writer's retention may delete what we picked
            failures: list[CheckpointError] = []
            for path in committed_paths(directory, self.basename):  # newest first
                try:
                    return self._restore_from(path, state, cast, strict)
                except CheckpointNotFoundError:
                    break  # deleted while we read it: newer ones exist; scan again
                except (CheckpointCorruptError, CheckpointFormatError) as exc:
                    _warn_once(warned, f"{exc}; falling back to an older checkpoint")
                    failures.append(exc)
            else:
                if not failures:
                    raise CheckpointNotFoundError(
                        f"no checkpoint to restore in {directory}", path=directory
                    )
                raise CheckpointCorruptError(
                    f"every checkpoint in {directory} is corrupt ({len(failures)} tried); "
                    f"newest: {failures[0]}",
                    path=directory,
                )
        raise CheckpointNotFoundError(
            f"checkpoints in {directory} kept disappearing while being restored "
            f"({_RESCANS} attempts): is another writer pruning it aggressively?",
            path=directory,
        )

    def _restore_from(
        self, path: Path, state: MutableMapping[str, Any], cast: bool, strict: bool
    ) -> CheckpointInfo:
        with CheckpointReader(path) as reader:
            saved = read_tree(reader, verify=self.verify_on_restore, mapped=True)
            info = reader.info
        if not isinstance(saved, dict):
            raise CheckpointCorruptError(
                f"{path}: the saved state is not a mapping", path=path, step=info.step
            )
        try:
            apply_state(state, saved, strict=strict, cast=cast)
        except StateMismatchError as exc:
            raise StateMismatchError(
                f"{exc} (restoring {path}, step {info.step})", path=path, step=info.step
            ) from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError) as exc:
            # the bytes verified, so the checkpoint does not fit what it is loaded into
            raise StateMismatchError(
                f"cannot restore {path} (step {info.step}) into the given state: "
                f"{type(exc).__name__}: {exc}",
                path=path,
                step=info.step,
            ) from exc
        return info

    # -- lifetime -------------------------------------------------------------------
    def close(self) -> None:
        """Wait for the saves still in flight, then release every directory lock and the
        staging buffers. Failed saves are reported by their futures, not raised here;
        Ctrl-C while waiting cancels them cleanly (nothing half-written is left)."""
        try:
            self._background.close()
        finally:
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()
            self._free_staging.clear()

    def __enter__(self) -> Saver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_RESCANS = 5


def _check_step(step: int) -> None:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")


def _warn_once(warned: set[str], message: str) -> None:
    if message not in warned:
        warned.add(message)
        warnings.warn(message, stacklevel=3)


def _checked_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The caller's metadata as a dict, refused up front unless it is plain JSON."""
    metadata = dict(metadata or {})
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointFormatError(
            f"checkpoint metadata must be plain JSON (str keys; str, int, finite float, bool, "
            f"None, lists and dicts of them): {exc}; convert values such as NumPy scalars "
            "with float() or int()"
        ) from None
    return metadata


def read_tree(
    reader: CheckpointReader, *, verify: bool = True, numpy_only: bool = False, mapped: bool = False
) -> Any:
    """Decode a checkpoint's whole tree, every tensor verified: read into fresh arrays, or with
    ``mapped`` left as ``MappedTensor`` views of the file for a single copy into targets."""
    records = {record.name: record for record in reader.manifest.tensors}

    def read_tensor(name: str, kind: str) -> Any:
        record = records.get(name)
        if record is None:
            raise CheckpointCorruptError(
                f"checkpoint {reader.path} (step {reader.step}) is corrupt: its tree names "
                f"tensor {name!r}, which the manifest does not list",
                path=reader.path,
                step=reader.step,
                tensor=name,
            )
        if numpy_only and kind != "numpy_scalar":
            kind = "numpy"
        if mapped:
            view = reader.mapped_view(record, verify=verify)
            return MappedTensor(record.dtype, record.shape, kind, view)

        def fill(view: memoryview) -> None:
            if view.nbytes:
                reader.read_into(record, view, verify=verify)

        return new_array(record.dtype, record.shape, kind, fill)

    try:
        return decode_tree(reader.manifest.tree, read_tensor)
    except (KeyError, TypeError, ValueError, CheckpointFormatError) as exc:
        raise CheckpointCorruptError(
            f"checkpoint {reader.path} (step {reader.step}) has a malformed state tree: {exc}",
            path=reader.path,
            step=reader.step,
        ) from exc


def load(path: str | os.PathLike[str], *, verify: bool = True) -> dict[str, Any]:
    """Read one checkpoint directory into nested dicts/lists of NumPy arrays and plain values.

    Needs no framework: torch tensors come back as NumPy arrays (bfloat16 as
    ``ml_dtypes.bfloat16`` when installed, else as its raw ``uint16`` bits).
    """
    with CheckpointReader(path) as reader:
        plain: dict[str, Any] = to_plain(read_tree(reader, verify=verify, numpy_only=True))
    return plain
