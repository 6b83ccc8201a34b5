"""The NumPy adapter: arrays, scalars and generators. Always in use (trainhooks needs NumPy),
and the fallback for a saved kind whose framework this process has not imported."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from trainhooks._exceptions import CheckpointFormatError
from trainhooks._state._adapters._base import ArrayAdapter, ArrayBytes, Fill, Staged
from trainhooks._store._dtypes import numpy_dtype_for, safetensors_code_for_numpy

if TYPE_CHECKING:
    from trainhooks._state._mapped import MappedTensor

__all__ = ["ADAPTER", "NumpyAdapter", "numpy_bytes", "numpy_stage", "numpy_view", "outline_array"]

_BIT_GENERATORS = {"PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"}


def numpy_bytes(array: np.ndarray, where: str) -> ArrayBytes:
    """Flat bytes of a NumPy array, copied only if it is not C-contiguous little-endian."""
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
    return code, tuple(array.shape), array.reshape(-1).view(np.uint8).data


def numpy_stage(array: np.ndarray, where: str, reuse: Any) -> Staged:
    """Copy a NumPy array's bytes into ``reuse`` when it is a buffer of the right size,
    else into a new one."""
    code, shape, data = numpy_bytes(array, where)
    fits = isinstance(reuse, np.ndarray) and reuse.nbytes == data.nbytes
    buffer = reuse if fits else np.empty(data.nbytes, np.uint8)
    np.copyto(buffer, np.frombuffer(data, np.uint8))
    return Staged((code, shape, buffer.data), buffer, None)


def numpy_view(tensor: MappedTensor) -> np.ndarray:
    """A NumPy array viewing a verified tensor's bytes."""
    flat = np.frombuffer(tensor.data, dtype=np.uint8)
    return flat.view(numpy_dtype_for(tensor.code)).reshape(tensor.shape)


class NumpyAdapter:
    """NumPy arrays (kind ``numpy``), NumPy scalars (``numpy_scalar``), and generators."""

    name = "numpy"

    def kind_of(self, value: object) -> str | None:
        if isinstance(value, np.ndarray):
            return "numpy"
        if isinstance(value, np.generic):
            return "numpy_scalar"
        return None

    def array_bytes(self, value: Any, where: str) -> ArrayBytes:
        return numpy_bytes(np.asarray(value), where)

    def stage(self, value: Any, where: str, reuse: Any) -> Staged:
        return numpy_stage(np.asarray(value), where, reuse)

    def new_array(self, code: str, shape: tuple[int, ...], kind: str, fill: Fill) -> Any:
        array = np.empty(shape, dtype=numpy_dtype_for(code))
        fill(array.reshape(-1).view(np.uint8).data)
        return array[()] if kind == "numpy_scalar" else array

    def view(self, tensor: MappedTensor) -> np.ndarray:
        return numpy_view(tensor)

    def can_fill(self, target: Any) -> bool:
        return isinstance(target, np.ndarray) and bool(target.flags.writeable)

    def copy_into(self, target: Any, tensor: MappedTensor) -> None:
        np.copyto(target, numpy_view(tensor), casting="unsafe")

    def cast_copy(self, tensor: MappedTensor, like: Any) -> Any:
        array = numpy_view(tensor).astype(like.dtype)  # astype always copies
        return array[()] if isinstance(like, np.generic) else array

    def loads_by_copy(self, target: object) -> bool:
        return False

    def refusal(self, node_type: str, target: object, state: Any) -> str | None:
        if node_type != "numpy_generator":
            return None
        saved = state.get("bit_generator") if isinstance(state, dict) else None
        if saved not in _BIT_GENERATORS:
            return f"the checkpoint holds an unknown NumPy bit generator {saved!r}"
        if isinstance(target, np.random.Generator):
            mine = type(target.bit_generator).__name__
            if mine != saved:
                return (
                    f"the checkpoint holds a {saved} generator, the target is a {mine} one; "
                    f"create the target with np.random.Generator(np.random.{saved}())"
                )
        return None

    def generator_state(self, value: object) -> tuple[str, Any] | None:
        if isinstance(value, np.random.Generator):
            return "numpy_generator", value.bit_generator.state
        if isinstance(value, np.random.RandomState):
            return "numpy_random_state", value.get_state(legacy=False)
        return None

    def restore_generator(self, node_type: str, target: object, state: Any) -> Any:
        if node_type == "numpy_generator":
            if not isinstance(target, np.random.Generator):
                target = np.random.Generator(getattr(np.random, state["bit_generator"])())
            target.bit_generator.state = state
            return target
        if node_type == "numpy_random_state":
            if not isinstance(target, np.random.RandomState):
                target = np.random.RandomState()
            target.set_state(state)
            return target
        raise CheckpointFormatError(f"unknown tree node type {node_type!r}")

    def global_rng_state(self) -> Any | None:
        return np.random.get_state(legacy=False)

    def set_global_rng_state(self, state: Any) -> None:
        np.random.set_state(state)

    def node_children(self, value: object) -> list[tuple[str | int, Any]] | None:
        return None

    def rebuild_node(self, target: Any, children: list[Any]) -> Any:
        raise TypeError(f"{type(target).__name__} is not a container node of {self.name}")

    def value_name(self, value: object) -> tuple[str, str] | None:
        return None

    def decode_value(self, node_type: str, text: str) -> Any:
        raise CheckpointFormatError(f"unknown tree node type {node_type!r}")


ADAPTER: ArrayAdapter = NumpyAdapter()


def outline_array(code: str, shape: tuple[int, ...]) -> np.ndarray:
    """A read-only zero-filled array of ``code``'s dtype and ``shape`` that takes no memory
    (one element, broadcast): a tensor's stand-in where only its kind is shown."""
    return np.broadcast_to(np.zeros((), dtype=numpy_dtype_for(code)), shape)
