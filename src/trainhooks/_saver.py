"""``Saver``: checkpoints a state mapping into a directory and restores it in place; ``load``.

The saver joins the two lower layers: the state layer turns objects into a JSON tree and
named tensors, the store commits them crash-safely. It also owns retention (TF's
``max_to_keep`` and ``keep_checkpoint_every_n_hours``) and the one-writer-per-directory lock.
"""

from __future__ import annotations

import json
import os
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
    CheckpointWriteError,
    StateMismatchError,
)
from trainhooks._state._apply import apply_state
from trainhooks._state._arrays import empty_array, finish_array
from trainhooks._state._decode import decode_tree, to_plain
from trainhooks._state._encode import encode_state
from trainhooks._state._mapped import MappedTensor
from trainhooks._store._commit import commit_checkpoint
from trainhooks._store._durable import DirectoryLock
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import DEFAULT_BASENAME, check_basename, committed_path
from trainhooks._store._reader import CheckpointReader, list_checkpoints, scan_checkpoints
from trainhooks._store._retention import clean_leftovers, remove_checkpoint

__all__ = ["Saver", "load"]


class _DirectoryState:
    """What a saver knows about one directory it writes: its lock and retention window."""

    def __init__(self, directory: Path, basename: str, max_to_keep: int | None) -> None:
        self.lock = DirectoryLock(directory)
        self.lock.acquire()
        self.inode = os.stat(directory).st_ino
        clean_leftovers(directory, basename)
        existing = list_checkpoints(directory, basename=basename)
        # Like TF's recover_last_checkpoints: only the newest window of a previous run is
        # managed; anything older was kept on purpose and is never deleted by retention.
        self.managed: list[CheckpointInfo] = existing[-max_to_keep:] if max_to_keep else []


class Saver:
    """Saves and restores checkpoints of a state mapping (see the module docstring).

    ``max_to_keep=None`` (or 0) keeps every checkpoint. Of the checkpoints that fall out of
    the ``max_to_keep`` window, one is kept for good every ``keep_checkpoint_every_n_hours``
    (measured from the saver's creation, as TF does).
    """

    def __init__(
        self,
        max_to_keep: int | None = 5,
        keep_checkpoint_every_n_hours: float = 10000.0,
        *,
        basename: str = DEFAULT_BASENAME,
        verify_on_restore: bool = True,
    ) -> None:
        if max_to_keep is not None and max_to_keep < 0:
            raise ValueError(f"max_to_keep must be None or >= 0, got {max_to_keep}")
        if keep_checkpoint_every_n_hours <= 0:
            raise ValueError("keep_checkpoint_every_n_hours must be positive")
        self.max_to_keep = max_to_keep or None
        self.keep_checkpoint_every_n_hours = keep_checkpoint_every_n_hours
        self.basename = check_basename(basename)
        self.verify_on_restore = verify_on_restore
        self._keep_interval = keep_checkpoint_every_n_hours * 3600.0
        self._next_keep_time = time.time() + self._keep_interval
        self._directories: dict[Path, _DirectoryState] = {}

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
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        metadata = _checked_metadata(metadata)
        tree, tensors = encode_state(state)
        directory = Path(directory).absolute()
        held = self._directory(directory, step)
        info = commit_checkpoint(directory, self.basename, step, tensors, tree, metadata)
        held.managed = [c for c in held.managed if c.step != step] + [info]
        self._apply_retention(held)
        return info

    def _directory(self, directory: Path, step: int) -> _DirectoryState:
        held = self._directories.get(directory)
        if held is not None and not _same_directory(directory, held.inode):
            held.lock.release()
            del self._directories[directory]
            raise CheckpointWriteError(
                f"{directory} was removed or replaced while a saver was writing it; the save "
                f"of step {step} did not happen (the next save re-creates the directory)",
                path=directory,
                step=step,
            )
        if held is None:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CheckpointWriteError(
                    f"cannot create checkpoint directory {directory}: {exc.strerror}",
                    path=directory,
                    step=step,
                    errno=exc.errno,
                ) from exc
            held = _DirectoryState(directory, self.basename, self.max_to_keep)
            self._directories[directory] = held
        return held

    def _apply_retention(self, held: _DirectoryState) -> None:
        if self.max_to_keep is None:
            held.managed = []
            return
        while len(held.managed) > self.max_to_keep:
            victim = held.managed.pop(0)
            if victim.time >= self._next_keep_time:
                self._next_keep_time = victim.time + self._keep_interval
                continue  # preserved for good, as keep_checkpoint_every_n_hours asks
            try:
                remove_checkpoint(victim, self.basename)
            except FileNotFoundError:
                continue  # already gone (removed by hand): nothing to do
            except OSError as exc:
                raise CheckpointWriteError(
                    f"retention could not delete {victim.path} (step {victim.step}): "
                    f"{exc.strerror}; the new checkpoint is committed",
                    path=victim.path,
                    step=victim.step,
                    errno=exc.errno,
                ) from exc

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
        next older valid one is used; with an explicit ``step`` corruption raises.
        """
        directory = Path(directory)
        if step is not None:
            return self._restore_from(
                committed_path(directory, self.basename, step), state, cast, strict
            )
        candidates, broken = scan_checkpoints(directory, self.basename)
        newest_valid = candidates[-1].step if candidates else -1
        for error in broken:
            if error.step is None or error.step > newest_valid:
                warnings.warn(f"{error}; skipping it", stacklevel=2)
        if not candidates:
            raise CheckpointNotFoundError(
                f"no checkpoint to restore in {directory}", path=directory
            )
        failures: list[CheckpointError] = []
        for info in reversed(candidates):
            try:
                restored = self._restore_from(info.path, state, cast, strict)
            except CheckpointCorruptError as exc:
                warnings.warn(f"{exc}; falling back to an older checkpoint", stacklevel=2)
                failures.append(exc)
                continue
            return restored
        raise CheckpointCorruptError(
            f"every checkpoint in {directory} is corrupt ({len(failures)} tried); "
            f"newest: {failures[0]}",
            path=directory,
        )

    def _restore_from(
        self, path: Path, state: MutableMapping[str, Any], cast: bool, strict: bool
    ) -> CheckpointInfo:
        reader = CheckpointReader(path)
        saved = read_tree(reader, verify=self.verify_on_restore, mapped=True)
        if not isinstance(saved, dict):
            raise CheckpointCorruptError(
                f"{path}: the saved state is not a mapping", path=path, step=reader.step
            )
        try:
            apply_state(state, saved, strict=strict, cast=cast)
        except StateMismatchError as exc:
            raise StateMismatchError(
                f"{exc} (restoring {path}, step {reader.step})", path=path, step=reader.step
            ) from None
        return reader.info

    # -- lifetime -------------------------------------------------------------------
    def close(self) -> None:
        """Release every directory lock this saver holds."""
        for held in self._directories.values():
            held.lock.release()
        self._directories.clear()

    def __enter__(self) -> Saver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


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


def _same_directory(directory: Path, inode: int) -> bool:
    try:
        return os.stat(directory).st_ino == inode
    except FileNotFoundError:
        return False


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
        array, view = empty_array(record.dtype, record.shape, kind)
        if view.nbytes:
            reader.read_into(record, view, verify=verify)
        return finish_array(array, kind)

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
    return to_plain(read_tree(CheckpointReader(path), verify=verify, numpy_only=True))
