"""The dtypes the format stores: safetensors dtype codes, item sizes and NumPy equivalents."""

from __future__ import annotations

import numpy as np

__all__ = ["DTYPE_ITEMSIZE", "DTYPE_NAMES", "numpy_dtype_for", "safetensors_code_for_numpy"]

# safetensors code -> bytes per element. Anything else is refused on save and on load.
DTYPE_ITEMSIZE: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
    "C64": 8,
}

# safetensors code -> the dtype's name as torch and NumPy (with ml_dtypes) spell it
DTYPE_NAMES: dict[str, str] = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "U16": "uint16",
    "I16": "int16",
    "F16": "float16",
    "BF16": "bfloat16",
    "U32": "uint32",
    "I32": "int32",
    "F32": "float32",
    "U64": "uint64",
    "I64": "int64",
    "F64": "float64",
    "C64": "complex64",
}
# Codes NumPy has no dtype for: ml_dtypes provides them when installed (it comes with JAX).
_ML_DTYPES_BY_CODE: dict[str, tuple[str, str]] = {
    "BF16": ("bfloat16", "uint16"),
    "F8_E4M3": ("float8_e4m3fn", "uint8"),
    "F8_E5M2": ("float8_e5m2", "uint8"),
}
_NUMPY_BY_CODE = {c: n for c, n in DTYPE_NAMES.items() if c not in _ML_DTYPES_BY_CODE}
_CODE_BY_NUMPY: dict[str, str] = {name: code for code, name in DTYPE_NAMES.items()}


def numpy_dtype_for(code: str) -> np.dtype:
    """The NumPy dtype to load ``code`` into (a same-size unsigned view if NumPy lacks it)."""
    if code in _NUMPY_BY_CODE:
        return np.dtype(_NUMPY_BY_CODE[code])
    ml_name, fallback = _ML_DTYPES_BY_CODE[code]
    try:
        import ml_dtypes

        dtype: np.dtype = np.dtype(getattr(ml_dtypes, ml_name))
        return dtype
    except ImportError:
        return np.dtype(fallback)


def safetensors_code_for_numpy(dtype: np.dtype) -> str | None:
    """The safetensors code of a NumPy dtype, or None when the format cannot hold it."""
    if dtype.byteorder == ">":
        return None
    return _CODE_BY_NUMPY.get(dtype.name)
