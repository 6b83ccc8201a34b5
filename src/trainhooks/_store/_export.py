"""Exporting one checkpoint as a single standalone ``.safetensors`` file for other tools.

The checkpoint's own data file already has the safetensors layout, so export verifies it and
copies it byte for byte; the state tree and step go into the header's ``__metadata__`` so
the single file is self-describing. Written crash-safely: temp file beside, fsync, rename.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path

from trainhooks._exceptions import CheckpointWriteError
from trainhooks._store._durable import fsync_directory, fsync_fd, write_all
from trainhooks._store._reader import CheckpointReader
from trainhooks._store._safetensors import build_header

__all__ = ["export_safetensors"]

_CHUNK = 8 * 1024 * 1024


def export_safetensors(
    checkpoint_path: str | os.PathLike[str], out_path: str | os.PathLike[str]
) -> Path:
    """Write ``checkpoint_path``'s tensors to ``out_path`` as one verified safetensors file.

    Tensor names are the checkpoint's (e.g. ``model/fc1.weight``); ``__metadata__`` holds
    ``trainhooks_step`` and ``trainhooks_tree`` (the JSON state tree).
    """
    with CheckpointReader(checkpoint_path) as reader:
        return _export(reader, Path(out_path))


def _export(reader: CheckpointReader, out_path: Path) -> Path:
    records = reader.manifest.tensors
    header, _ = build_header(
        [(r.name, r.dtype, r.shape, r.end - r.begin) for r in records],
        {
            "format": "pt",
            "producer": "trainhooks",
            "trainhooks_step": str(reader.manifest.step),
            "trainhooks_tree": json.dumps(reader.manifest.tree, separators=(",", ":")),
        },
    )
    out = out_path.absolute()
    temp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            write_all(fd, memoryview(header))
            buffer = memoryview(bytearray(_CHUNK))
            for record in records:
                _copy_verified(reader, record, fd, buffer)
            fsync_fd(fd)
        finally:
            os.close(fd)
        os.rename(temp, out)
        fsync_directory(out.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if not isinstance(exc, OSError):
            raise  # e.g. CheckpointCorruptError from verification: nothing is left behind
        raise CheckpointWriteError(
            f"could not export {reader.path} to {out}: {exc.strerror or exc}",
            path=out,
            step=reader.step,
            errno=exc.errno,
        ) from exc
    return out


def _copy_verified(reader: CheckpointReader, record, fd: int, buffer: memoryview) -> None:
    """Copy one tensor's bytes through ``reader`` (checksum verified) into ``fd``."""
    size = record.end - record.begin
    if size <= len(buffer):
        reader.read_into(record, buffer[:size])
        write_all(fd, buffer[:size])
        return
    data = bytearray(size)  # a large tensor is verified whole before any byte is exported
    reader.read_into(record, memoryview(data))
    write_all(fd, memoryview(data))
