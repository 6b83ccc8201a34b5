"""The JAX adapter: ``jax.Array`` values (kind ``jax``). The one module of trainhooks that
imports JAX; loaded only once the process has imported it.

JAX arrays are immutable, so a restore never fills one in place: it hands back a new array
of the target's dtype, and the caller's tree holds it (JAX code rebinds its state anyway).
Their bytes go through NumPy: on the CPU ``np.asarray`` is a view, elsewhere one copy to
the host. JAX keeps randomness in explicit key arrays, which are saved as arrays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from trainhooks._exceptions import CheckpointFormatError
from trainhooks._state._adapters._base import ArrayAdapter, ArrayBytes, Fill, Staged
from trainhooks._state._adapters._numpy import ADAPTER as NUMPY
from trainhooks._state._adapters._numpy import numpy_bytes, numpy_stage, numpy_view

if TYPE_CHECKING:
    from trainhooks._state._mapped import MappedTensor

__all__ = ["ADAPTER", "JaxAdapter"]


class JaxAdapter:
    """``jax.Array`` values; no generators, no stateful objects, no named values."""

    name = "jax"

    def kind_of(self, value: object) -> str | None:
        return "jax" if isinstance(value, jax.Array) else None

    def array_bytes(self, value: Any, where: str) -> ArrayBytes:
        return numpy_bytes(np.asarray(value), where)

    def stage(self, value: Any, where: str, reuse: Any) -> Staged:
        # A JAX array never changes, but the step may donate its buffer to a jitted
        # update; a copy of our own keeps the snapshot valid whatever the step does.
        return numpy_stage(np.asarray(value), where, reuse)

    def new_array(self, code: str, shape: tuple[int, ...], kind: str, fill: Fill) -> Any:
        # read into NumPy memory of our own, then hand it to JAX (which may keep it on CPU)
        return jnp.asarray(NUMPY.new_array(code, shape, "numpy", fill))

    def view(self, tensor: MappedTensor) -> np.ndarray:
        return numpy_view(tensor)

    def can_fill(self, target: Any) -> bool:
        return False  # JAX arrays are immutable

    def copy_into(self, target: Any, tensor: MappedTensor) -> None:
        raise TypeError("JAX arrays are immutable and cannot be filled in place")

    def cast_copy(self, tensor: MappedTensor, like: Any) -> Any:
        # a private NumPy copy first: JAX may alias host memory, and the mapping is closed
        return jnp.asarray(numpy_view(tensor).astype(like.dtype))

    def loads_by_copy(self, target: object) -> bool:
        return False

    def refusal(self, node_type: str, target: object, state: Any) -> str | None:
        return None

    def generator_state(self, value: object) -> tuple[str, Any] | None:
        return None

    def restore_generator(self, node_type: str, target: object, state: Any) -> Any:
        raise CheckpointFormatError(f"unknown tree node type {node_type!r}")

    def global_rng_state(self) -> Any | None:
        return None

    def set_global_rng_state(self, state: Any) -> None:
        return None

    def value_name(self, value: object) -> tuple[str, str] | None:
        return None

    def decode_value(self, node_type: str, text: str) -> Any:
        raise CheckpointFormatError(f"unknown tree node type {node_type!r}")


ADAPTER: ArrayAdapter = JaxAdapter()
