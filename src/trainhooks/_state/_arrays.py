"""Bridging array types and the store: bytes out of tensors for saving, fresh arrays to read
into for restoring. torch and JAX are only touched when the caller already imported them.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from trainhooks._exceptions import CheckpointFormatError
from trainhooks._store._dtypes import numpy_dtype_for, safetensors_code_for_numpy

__all__ = ["ArrayBytes", "array_bytes", "array_kind", "empty_array", "to_numpy"]

ArrayBytes = tuple[str, tuple[int, ...], memoryview]  # (safetensors dtype, shape, flat bytes)


def _torch() -> Any:
    return sys.modules.get("torch")


def array_kind(value: Any) -> str | None:
    """The kind of an array-like leaf (torch, numpy, numpy_scalar, jax), else None."""
    if isinstance(value, np.ndarray):
        return "numpy"
    if isinstance(value, np.generic):
        return "numpy_scalar"
    torch = _torch()
    if torch is not None and isinstance(value, torch.Tensor):
        return "torch"
    module = type(value).__module__
    if module.startswith(("jax", "jaxlib")) and hasattr(value, "__array__"):
        return "jax"
    return None


def array_bytes(value: Any, kind: str, where: str) -> ArrayBytes:
    """The dtype code, shape and a zero-copy flat byte view of an array (copies only when the
    array is not already contiguous, little-endian and in host memory)."""
    if kind == "torch":
        from trainhooks._state._torch import torch_tensor_bytes

        return torch_tensor_bytes(value, where)
    array = np.asarray(value)
    if not array.flags.c_contiguous:  # (np.ascontiguousarray would turn 0-d into 1-d)
        array = array.copy(order="C")
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    code = safetensors_code_for_numpy(array.dtype)
    if code is None:
        raise CheckpointFormatError(
            f"cannot checkpoint {where}: NumPy dtype {array.dtype} has no safetensors "
            "equivalent; convert it (e.g. to float64 or int64) first"
        )
    return code, tuple(array.shape), memoryview(array.reshape(-1).view(np.uint8).data)


def empty_array(code: str, shape: tuple[int, ...], kind: str) -> tuple[Any, memoryview]:
    """A fresh array of ``kind`` to read a tensor into, and its writable flat byte view."""
    if kind == "torch" and _torch() is not None:  # no torch in use: nothing torch to fill
        from trainhooks._state._torch import empty_torch_tensor

        return empty_torch_tensor(code, shape)
    array = np.empty(shape, dtype=numpy_dtype_for(code))
    return array, memoryview(array.reshape(-1).view(np.uint8).data)


def finish_array(array: Any, kind: str) -> Any:
    """Turn a freshly read array into the kind it was saved as, where that framework exists."""
    if kind == "numpy_scalar" and isinstance(array, np.ndarray):
        return array[()]
    if kind == "jax" and "jax" in sys.modules:
        return sys.modules["jax"].numpy.asarray(array)
    return array


def to_numpy(array: Any) -> np.ndarray:
    """A NumPy view (or copy for torch bfloat16) of a freshly read array."""
    if isinstance(array, np.ndarray):
        return array
    torch = _torch()
    if torch is not None and isinstance(array, torch.Tensor):
        from trainhooks._state._torch import torch_to_numpy

        return torch_to_numpy(array)
    return np.asarray(array)
