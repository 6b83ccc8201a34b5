"""A checkpoint's state tree without its tensor bytes, for ``trainhooks show``.

``show`` prints names, dtypes, shapes and sizes, all of which the manifest holds; reading
the tensors (``trainhooks.load``) would download a whole checkpoint from object storage
only to print them. Each tensor is stood in for by a read-only broadcast of one zero of
its dtype to its shape: ``dtype``, ``shape`` and ``nbytes`` are the tensor's, and it takes
no memory. Opening the checkpoint still runs the store's structure check (manifest and
data-file headers), so a damaged checkpoint fails here as it fails in ``load``.

Private names used: the store's reader opener and the tree decoder, the same ones
``trainhooks.load`` runs, so the tree is exactly the one ``load`` would return.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainhooks._exceptions import CheckpointCorruptError, CheckpointFormatError
from trainhooks._saver import open_reader
from trainhooks._state._decode import decode_tree, to_plain
from trainhooks._store._dtypes import numpy_dtype_for
from trainhooks._store._layout import MANIFEST_FILE

__all__ = ["load_skeleton"]


def load_skeleton(path: Any) -> Any:
    """``trainhooks.load(path)``'s tree with every tensor a zero-memory placeholder."""
    with open_reader(path) as reader:
        records = {record.name: record for record in reader.manifest.tensors}

        def placeholder(name: str, kind: str) -> Any:
            record = records[name]  # a name the manifest lacks: KeyError, reported below
            zero = np.zeros((), numpy_dtype_for(record.dtype))
            return zero[()] if kind == "numpy_scalar" else np.broadcast_to(zero, record.shape)

        try:
            return to_plain(decode_tree(reader.manifest.tree, placeholder))
        except (KeyError, TypeError, ValueError, OverflowError, CheckpointFormatError) as exc:
            raise CheckpointCorruptError(
                f"checkpoint {reader.path} (step {reader.step}) is corrupt: {MANIFEST_FILE} "
                f"holds a malformed state tree ({exc})",
                path=reader.path,
                step=reader.step,
                file=MANIFEST_FILE,
            ) from exc
