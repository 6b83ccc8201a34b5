"""``MappedTensor``: a verified tensor still sitting in the checkpoint's file mapping.

Restoring copies each tensor once, from the mapping straight into the caller's existing
tensor or array, instead of reading into a fresh buffer and copying again; values with no
existing target are materialised as fresh arrays of the kind they were saved as. Nothing
that escapes to the caller keeps a reference to the mapping.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from trainhooks._state._arrays import empty_array, finish_array
from trainhooks._store._dtypes import DTYPE_NAMES, numpy_dtype_for

__all__ = ["MappedTensor"]


class MappedTensor:
    """A verified tensor's bytes (a view into a private file mapping), dtype and shape."""

    __slots__ = ("code", "data", "kind", "shape")

    def __init__(self, code: str, shape: tuple[int, ...], kind: str, data: memoryview) -> None:
        self.code = code
        self.shape = shape
        self.kind = kind
        self.data = data

    @property
    def dtype(self) -> str:
        return DTYPE_NAMES[self.code]

    def as_torch(self) -> Any:
        """A torch tensor *viewing* the mapping: only for immediate copying."""
        from trainhooks._state._torch import TORCH_BY_CODE

        torch = sys.modules["torch"]
        if not self.data.nbytes:
            return torch.empty(self.shape, dtype=TORCH_BY_CODE[self.code])
        flat = torch.frombuffer(self.data, dtype=torch.uint8)
        return flat.view(TORCH_BY_CODE[self.code]).reshape(self.shape)

    def as_numpy(self) -> np.ndarray:
        """A NumPy array *viewing* the mapping: only for immediate copying."""
        flat = np.frombuffer(self.data, dtype=np.uint8)
        return flat.view(numpy_dtype_for(self.code)).reshape(self.shape)

    def materialize(self) -> Any:
        """A fresh array of the saved kind holding a copy of the bytes."""
        array, view = empty_array(self.code, self.shape, self.kind)
        view[:] = self.data
        return finish_array(array, self.kind)
