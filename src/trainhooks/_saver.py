"""``Saver``: checkpoints a state mapping into a directory and restores it in place; ``load``.

The saver joins the two lower layers: the state layer turns objects into a JSON tree and
named tensors (and applies them back); the store commits them crash-safely, through the
process's one ``DirectoryWriter`` per directory (a lease on it per directory saved into),
which holds that directory's lock and retention (TF's ``max_to_keep`` and
``keep_checkpoint_every_n_hours``).

``save_async`` is the same join with a copy in the middle: the state layer snapshots the
arrays into reusable staging buffers on the caller's thread, and the store's
``BackgroundWriter`` commits the snapshot on its worker thread, through the same lease,
admission checks and commit numbering as ``save``.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import warnings
from collections.abc import Callable, Collection, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from trainhooks._exceptions import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointFormatError,
    CheckpointNotFoundError,
    StateMismatchError,
)
from trainhooks._state._adapters._numpy import outline_array
from trainhooks._state._adapters._registry import new_array
from trainhooks._state._apply import apply_state
from trainhooks._state._decode import decode_tree, select_entries, tensor_names, to_plain
from trainhooks._state._dist_entries import unfold_distributed
from trainhooks._state._encode import encode_state
from trainhooks._state._mapped import MappedTensor
from trainhooks._state._reserved import HOOK_STATE_KEY
from trainhooks._state._staging import StagingBuffers
from trainhooks._state._subtree import select_entry
from trainhooks._store._admit import checked_metadata
from trainhooks._store._background import BackgroundWriter, SaveFuture
from trainhooks._store._export import export_checkpoint
from trainhooks._store._info import CheckpointInfo
from trainhooks._store._layout import (
    DEFAULT_BASENAME,
    MANIFEST_FILE,
    check_basename,
    committed_name,
)
from trainhooks._store._listing import ordered_commits
from trainhooks._store._manifest import TensorRecord
from trainhooks._store._reader import CheckpointReader
from trainhooks._store._remote._url import ObjectPath, as_url, local_path
from trainhooks._store._sharing import WriterLease, open_writer
from trainhooks._store._writer import retention_policy

if TYPE_CHECKING:
    from trainhooks._store._remote._reader import RemoteCheckpointReader
    from trainhooks._store._remote._writer import RemoteWriter

    Reader = CheckpointReader | RemoteCheckpointReader

__all__ = ["Saver", "export_safetensors", "load"]


class Saver:
    """Saves and restores checkpoints of a state mapping (see the module docstring).

    ``max_to_keep=None`` (or 0) keeps every checkpoint. Of the checkpoints that fall out of
    the ``max_to_keep`` window, one is kept for good every ``keep_checkpoint_every_n_hours``
    (measured from the first saver's creation, as TF does, and carried across restarts).
    Retention survives crashes: its state is stored in each checkpoint's manifest, so the
    next writer finishes deletions a crash interrupted (see ``docs/design.md``).

    A directory has one writer: a saver takes its lock at its first save there (or at
    :meth:`acquire`) and keeps it until :meth:`close`, so another process saving there
    fails with ``CheckpointLockedError``. Savers of one process share the directory's
    writer (as TF's saver hooks share one saver) if they keep the same retention.

    Every ``directory`` may be a URL (``s3://bucket/prefix``, ``gs://...``, any fsspec URL;
    ``file://`` is local): ``storage_options`` go to fsspec as given, otherwise credentials
    and endpoints come from the service's usual places (see ``docs/object-storage.md``).

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
        storage_options: Mapping[str, Any] | None = None,
        max_pending: int = 1,
    ) -> None:
        self._retention = retention_policy(max_to_keep, keep_checkpoint_every_n_hours)
        self.max_to_keep = self._retention.max_to_keep
        self.keep_checkpoint_every_n_hours = keep_checkpoint_every_n_hours
        self.basename = check_basename(basename)
        self.verify_on_restore = verify_on_restore
        self.storage_options = dict(storage_options) if storage_options else None
        self._writers: dict[Path | str, WriterLease | RemoteWriter] = {}
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
        metadata = checked_metadata(metadata)
        self._background.drain()  # saves commit in the order they were made
        tree, tensors = encode_state(state)
        return self._writer(directory, step).commit(step, tensors, tree, metadata)

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
        future's ``result()``. Saves commit in the order they were made. To a URL, the
        upload runs in the background the same way (see ``docs/object-storage.md``).
        """
        _check_step(step)
        private: dict[str, Any] = json.loads(json.dumps(checked_metadata(metadata)))
        writer = self._writer(directory, step)
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

        place = (
            writer.writer.directory if isinstance(writer, WriterLease) else ObjectPath(writer.url)
        )
        return self._background.submit(
            SaveFuture(step, place), commit, lambda: self._free_staging.append(staging)
        )

    def commit_with(
        self,
        directory: str | os.PathLike[str],
        step: int,
        commit: Callable[[dict[str, Any]], CheckpointInfo],
    ) -> CheckpointInfo:
        """Commit a checkpoint that ``commit`` writes itself (a collective save of several
        processes) in ``directory`` under this saver's lock and retention: ``commit`` gets
        the retention record to store in its manifest; ``max_to_keep`` applies as for
        :meth:`save`. A URL's writer is its lease holder (``commit`` numbers the commit
        after the highest there)."""
        _check_step(step)
        self._background.drain()
        writer = self._writer(directory, step)
        return writer.commit_with(step, lambda plan, _when: commit(plan.to_json()))

    def acquire(self, directory: str | os.PathLike[str]) -> None:
        """Become the writer of ``directory`` now rather than at the first save.

        Takes its lock (``CheckpointLockedError`` if another process holds it), creates
        it if needed and finishes what a crashed writer left. A training session's saver
        hook calls this at creation, so a second writer is found before any training.
        """
        self._writer(directory, None)

    def _writer(
        self, directory: str | os.PathLike[str], step: int | None
    ) -> WriterLease | RemoteWriter:
        url = as_url(directory)
        key: Path | str = url if url is not None else local_path(directory).absolute()
        writer = self._writers.get(key)
        if writer is None or writer.closed:  # closed: its directory was removed or replaced
            writer = self._open_writer(key, step)
            self._writers[key] = writer
        return writer

    def _open_writer(self, key: Path | str, step: int | None) -> WriterLease | RemoteWriter:
        """A local directory's writer is shared by the process's savers; a URL's is ours."""
        if isinstance(key, Path):
            return open_writer(key, self.basename, self._retention, step)
        from trainhooks._store._remote._writer import RemoteWriter

        return RemoteWriter(key, self.basename, self._retention, self.storage_options)

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

        Tensors and arrays are filled in place, mutable containers (dicts, lists,
        dataclasses) refilled. What cannot change in place — JAX arrays and keys, tuples
        and named tuples, frozen dataclasses, JAX pytree nodes (optax states, equinox
        modules) — is rebuilt as the target's own type and *replaces* the old value in its
        container: read it back from ``state`` (``opt_state = state["opt"]``). Returns the
        ``CheckpointInfo`` of the checkpoint restored.

        With ``step=None`` a corrupt newest checkpoint is reported with a warning and the
        next older valid one is used; with an explicit ``step`` corruption raises. The
        hooks' own states a session saves (entry ``"__trainhooks__"``) are restored only
        into a state that has that entry: a session's checkpoint restores into a plain
        state mapping too. Saves this saver still has in flight are waited for first, so
        a restore sees them.
        """
        self._background.drain()
        url = as_url(directory)
        directory = ObjectPath(url) if url is not None else local_path(directory)
        if step is not None:
            return self._restore_from(
                directory / committed_name(self.basename, step), state, cast, strict
            )
        warned: set[str] = set()
        for _ in range(_RESCANS):  # a live writer's retention may delete what we picked
            failures: list[CheckpointError] = []
            paths, vanished = self._committed(directory)
            for path in paths:  # the last committed first
                try:
                    info = self._restore_from(path, state, cast, strict)
                except CheckpointNotFoundError:
                    break  # deleted while we read it: newer ones exist; scan again
                except (CheckpointCorruptError, CheckpointFormatError) as exc:
                    failures.append(exc)
                    continue
                _warn_skipped(warned, failures, info)
                return info
            else:
                if vanished:  # some were deleted while listed: newer ones may exist
                    continue
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

    def _committed(self, directory: Path | ObjectPath) -> tuple[list[Path | ObjectPath], bool]:
        """The candidates, the last committed first, and whether one vanished meanwhile."""
        if isinstance(directory, Path):
            paths, vanished = ordered_commits(directory, self.basename)
            return list(paths), vanished
        from trainhooks._store._remote._api import committed_names

        names = committed_names(str(directory), self.basename, self.storage_options)
        return [directory / name for name in names], False

    def _restore_from(
        self, path: Path | ObjectPath, state: MutableMapping[str, Any], cast: bool, strict: bool
    ) -> CheckpointInfo:
        def needed(key: str | int) -> bool:
            # the entries restored: the state's own, and (strict) any the state lacks, for
            # apply_state to report; the tensors of the others are never read
            return key in state or (strict and key != HOOK_STATE_KEY)

        with open_reader(path, self.storage_options, follow_symlinks=False) as reader:
            saved = read_tree(reader, verify=self.verify_on_restore, mapped=True, keep=needed)
            info = reader.info
        if not isinstance(saved, dict):
            raise CheckpointCorruptError(
                f"{path}: the saved state is not a mapping", path=path, step=info.step
            )
        try:
            apply_state(state, saved, strict=strict, cast=cast, optional=(HOOK_STATE_KEY,))
        except StateMismatchError as exc:
            raise StateMismatchError(
                f"{exc} (restoring {path}, step {info.step})", path=path, step=info.step
            ) from None
        except CheckpointCorruptError as exc:  # a value no save could have written
            raise CheckpointCorruptError(
                f"checkpoint {path} (step {info.step}) is corrupt: {exc}",
                path=path,
                step=info.step,
                file=MANIFEST_FILE,
            ) from None
        except (
            TypeError,
            ValueError,
            KeyError,
            IndexError,
            AttributeError,
            RuntimeError,
            OverflowError,
        ) as exc:
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
        """Wait for the saves still in flight, then release every directory lock this saver
        holds (shared ones once no saver of this process holds them any more) and the
        staging buffers. Failed saves are reported by their futures, not raised here;
        Ctrl-C while waiting cancels them cleanly (nothing half-written is left)."""
        try:
            self._background.close()
        finally:
            for lease in self._writers.values():
                lease.close()
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


def _warn_skipped(warned: set[str], failures: list[CheckpointError], used: CheckpointInfo) -> None:
    """One warning per skipped checkpoint: why, which step was restored instead, and how
    to inspect the skipped one."""
    for failure in failures:
        message = (
            f"{failure}; restored step {used.step} ({used.path.name}) instead; inspect the "
            f"skipped checkpoint with `trainhooks verify {failure.path}`"
        )
        if message not in warned:
            warned.add(message)
            warnings.warn(message, stacklevel=3)


def open_reader(
    path: str | os.PathLike[str],
    storage_options: dict[str, Any] | None = None,
    *,
    follow_symlinks: bool = True,
) -> Reader:
    """A structure-checked reader of one checkpoint, on local disk or at a URL; without
    ``follow_symlinks`` a local checkpoint found by name is never read through a link."""
    url = as_url(path)
    if url is None:
        return CheckpointReader(local_path(path), follow_symlinks=follow_symlinks)
    from trainhooks._store._remote._reader import RemoteCheckpointReader

    return RemoteCheckpointReader(url, storage_options=storage_options)


def read_tree(
    reader: Reader,
    *,
    verify: bool = True,
    numpy_only: bool = False,
    mapped: bool = False,
    keep: Callable[[str | int], bool] | None = None,
    substitute: Callable[[TensorRecord], Any] | None = None,
) -> Any:
    """Decode a checkpoint's tree, every tensor read verified: into fresh arrays, or with
    ``mapped`` left as ``MappedTensor`` views of the file for a single copy into targets.

    Only what is needed is read (from object storage: downloaded, by range): ``keep``
    chooses top-level entries (the others are left out), and a tensor for which
    ``substitute`` returns a value other than None is not read: that value stands in."""
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
        if substitute is not None and (stand_in := substitute(record)) is not None:
            return stand_in
        if mapped:
            view = reader.mapped_view(record, verify=verify)
            return MappedTensor(record.dtype, record.shape, kind, view)

        def fill(view: memoryview) -> None:
            if view.nbytes:
                reader.read_into(record, view, verify=verify)

        return new_array(record.dtype, record.shape, kind, fill)

    try:
        tree = reader.manifest.tree if keep is None else select_entries(reader.manifest.tree, keep)
        prefetch = getattr(reader, "prefetch", None)  # object storage: parallel range reads
        if mapped and substitute is None and prefetch is not None:
            prefetch([records[n] for n in dict.fromkeys(tensor_names(tree)) if n in records])
        return decode_tree(tree, read_tensor)
    except (KeyError, TypeError, ValueError, OverflowError, CheckpointFormatError) as exc:
        raise CheckpointCorruptError(
            f"checkpoint {reader.path} (step {reader.step}) is corrupt: {MANIFEST_FILE} holds "
            f"a malformed state tree ({exc})",
            path=reader.path,
            step=reader.step,
            file=MANIFEST_FILE,
        ) from exc


def load(path: str | os.PathLike[str], *, verify: bool = True) -> dict[str, Any]:
    """Read one checkpoint directory (or URL: ``s3://bucket/prefix/ckpt-...``) into nested
    dicts/lists of NumPy arrays and plain values.

    Needs no framework and imports no class named in the file (no pickle, no template):
    torch tensors and ``Parameter``s, JAX arrays come back as NumPy arrays (bfloat16 as
    ``ml_dtypes.bfloat16``); tuples and named tuples (optax states) as tuples; dataclasses
    and JAX pytree nodes (equinox modules) as dicts of their fields, callables in them as
    None; objects saved through ``state_dict()`` as that dict; generators and typed JAX
    keys as their state (``{"impl": ..., "data": uint32 array}`` for a key); ``OrderedDict``
    and ``bytearray`` keep their types. To get the original types back, restore into a
    template with ``Saver.restore`` instead.
    """
    with open_reader(path) as reader:
        plain: dict[str, Any] = to_plain(read_tree(reader, verify=verify, numpy_only=True))
    return unfold_distributed(plain)


def load_outline(
    path: str | os.PathLike[str], tensors: Collection[str] = ()
) -> tuple[dict[str, Any], dict[int, str]]:
    """``load`` reading only the tensors named in ``tensors`` (verified): every other one is
    a read-only zero-filled NumPy array of its dtype and shape that takes no memory. Also
    returns the manifest name of each stand-in by its ``id``, to ask for it next. What
    ``trainhooks show`` needs: from object storage it downloads the manifest, the headers
    and those tensors only."""
    names: dict[int, str] = {}

    def stand_in(record: TensorRecord) -> Any:
        if record.name in tensors:
            return None
        array = outline_array(record.dtype, record.shape)
        names[id(array)] = record.name
        return array

    with open_reader(path) as reader:
        tree = read_tree(reader, numpy_only=True, substitute=stand_in)
    plain: dict[str, Any] = to_plain(tree)
    return unfold_distributed(plain), names


@overload
def export_safetensors(
    checkpoint_path: str | os.PathLike[str], out_path: Path, *, only: str | None = None
) -> Path: ...


@overload
def export_safetensors(
    checkpoint_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    only: str | None = None,
) -> Path | ObjectPath: ...


def export_safetensors(
    checkpoint_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    only: str | None = None,
) -> Path | ObjectPath:
    """Write one checkpoint's tensors to ``out_path`` as one verified safetensors file.
    Either may be a URL (``s3://bucket/prefix/...``); an exported object is then returned
    as an ``ObjectPath`` (``str`` gives its URL); a ``Path`` ``out_path`` is always local,
    so its result is typed ``Path``.

    Tensor names are the checkpoint's (``model/fc1.weight``, the names ``trainhooks show``
    prints). With ``only``, just the entry ``only`` of the state is exported (``"model"``,
    or a path such as ``"nets/generator"``), its tensors named relative to it: for a torch
    module those are its ``state_dict()`` keys, so
    ``model.load_state_dict(safetensors.torch.load_file(out_path))`` works as is (an export
    of the whole state holds optimizer moments, RNG states and the like too). The header's
    ``__metadata__`` holds ``trainhooks_step``, ``trainhooks_tree`` (the JSON tree of what
    was exported) and, with ``only``, ``trainhooks_only``.
    """
    select = None if only is None else functools.partial(select_entry, only=only)
    return export_checkpoint(checkpoint_path, out_path, select=select)
