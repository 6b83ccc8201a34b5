"""``MappedTensor``: a verified tensor still sitting in the checkpoint's file mapping.

Restoring copies each tensor once, from the mapping straight into the caller's existing
tensor or array, instead of reading into a fresh buffer and copying again; values with no
existing target are materialised as fresh arrays of the kind they were saved as. Nothing
that escapes to the caller keeps a reference to the mapping.
"""

from __future__ import annotations

from typing import Any

from trainhooks._state._adapters._registry import new_array
from trainhooks._store._dtypes import DTYPE_NAMES

__all__ = ["MappedTensor"]


class MappedTensor:
    """A verified tensor's bytes (a view into a private file mapping), dtype and shape;
    adapters view it as their own arrays (``ArrayAdapter.view``) only to copy it at once."""

    __slots__ = ("code", "data", "kind", "shape")

    def __init__(self, code: str, shape: tuple[int, ...], kind: str, data: memoryview) -> None:
        self.code = code
        self.shape = shape
        self.kind = kind
        self.data = data

    @property
    def dtype(self) -> str:
        return DTYPE_NAMES[self.code]

    def materialize(self) -> Any:
        """A fresh array of the saved kind holding a copy of the bytes."""

        def fill(view: memoryview) -> None:
            view[:] = self.data

        return new_array(self.code, self.shape, self.kind, fill)
