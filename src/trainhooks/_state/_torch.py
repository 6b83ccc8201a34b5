"""The torch integration of the state layer; imported only once torch is in use."""

from __future__ import annotations

import numpy as np
import torch

from trainhooks._exceptions import CheckpointFormatError

__all__ = [
    "CODE_BY_TORCH",
    "TORCH_BY_CODE",
    "empty_torch_tensor",
    "torch_tensor_bytes",
    "torch_to_numpy",
]

CODE_BY_TORCH: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "U8",
    torch.int8: "I8",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
    torch.uint16: "U16",
    torch.int16: "I16",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.uint32: "U32",
    torch.int32: "I32",
    torch.float32: "F32",
    torch.uint64: "U64",
    torch.int64: "I64",
    torch.float64: "F64",
    torch.complex64: "C64",
}
TORCH_BY_CODE: dict[str, torch.dtype] = {code: dtype for dtype, code in CODE_BY_TORCH.items()}


def torch_tensor_bytes(tensor: torch.Tensor, where: str) -> tuple[str, tuple[int, ...], memoryview]:
    """Flat bytes of a tensor without copying when it is a dense contiguous CPU tensor."""
    code = CODE_BY_TORCH.get(tensor.dtype)
    if code is None:
        raise CheckpointFormatError(
            f"cannot checkpoint {where}: torch dtype {tensor.dtype} has no safetensors "
            "equivalent; convert it first"
        )
    if tensor.layout != torch.strided or tensor.is_quantized:
        raise CheckpointFormatError(
            f"cannot checkpoint {where}: {tensor.layout} / quantized tensors are not supported; "
            "convert with .to_dense() or .dequantize() first"
        )
    flat = tensor.detach().resolve_conj().resolve_neg().cpu().contiguous().reshape(-1)
    return code, tuple(tensor.shape), memoryview(flat.view(torch.uint8).numpy().data)


def empty_torch_tensor(code: str, shape: tuple[int, ...]) -> tuple[torch.Tensor, memoryview]:
    tensor = torch.empty(shape, dtype=TORCH_BY_CODE[code])
    return tensor, memoryview(tensor.reshape(-1).view(torch.uint8).numpy().data)


def torch_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    if tensor.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
        from trainhooks._store._dtypes import numpy_dtype_for

        raw = tensor.reshape(-1).view(torch.uint8).numpy()
        return raw.view(numpy_dtype_for(CODE_BY_TORCH[tensor.dtype])).reshape(tuple(tensor.shape))
    return tensor.numpy()
