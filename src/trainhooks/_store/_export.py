"""Exporting one checkpoint as a single standalone ``.safetensors`` file for other tools.

The checkpoint's own data file already has the safetensors layout, so export verifies it and
copies it byte for byte; the state tree and step go into the header's ``__metadata__`` so
the single file is self-describing. Written crash-safely: temp file beside, fsync, rename.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from trainhooks._exceptions import CheckpointWriteError
from trainhooks._store._durable import write_file_atomically
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

    def chunks() -> Iterator[memoryview]:
        yield memoryview(header)
        for record in records:
            data = reader.mapped_view(record)  # verified whole before any byte is written
            for start in range(0, len(data), _CHUNK):
                yield data[start : start + _CHUNK]

    out = out_path.absolute()
    try:
        write_file_atomically(out, chunks())
    except OSError as exc:
        raise CheckpointWriteError(
            f"could not export {reader.path} to {out}: {exc.strerror or exc}",
            path=out,
            step=reader.step,
            errno=exc.errno,
        ) from exc
    return out
