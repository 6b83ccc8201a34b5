"""The JAX adapter: arrays (kind ``jax``), typed PRNG keys and pytree nodes. The one module
of trainhooks that imports JAX; loaded only once the process has imported it.

JAX arrays are immutable, so a restore never fills one in place: it hands back a new array
of the target's dtype, placed like the target (on its device or sharding when the target
is committed to one), and the caller's tree holds it. Bytes go through NumPy: on the CPU
``np.asarray`` is a view, elsewhere one copy to the host.

Typed keys (``jax.random.key``) have no bytes NumPy can hold, so they are saved like a
generator: the name of their PRNG implementation and ``jax.random.key_data``, rebuilt with
``jax.random.wrap_key_data``. Legacy ``jax.random.PRNGKey`` keys are plain uint32 arrays.

Pytree nodes other than the built-in containers (equinox modules, flax structs, anything
registered with ``jax.tree_util``) are saved through their children, one level down, and
rebuilt from the *target's* own treedef: static fields and the node's type come from the
caller's object, never from the file, so nothing is imported by a name read from it.

JAX has no process-wide generator. What it does have is configuration deciding which
numbers a key draws (the default implementation, ``jax_threefry_partitionable``): that is
what ``RNGState`` records for JAX, and a resume under another configuration warns.
"""

from __future__ import annotations

import functools
import warnings
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

_KEY = "jax_key"  # the tree node type of a typed PRNG key
_RNG_CONFIG = ("jax_default_prng_impl", "jax_threefry_partitionable")


class JaxAdapter:
    """``jax.Array`` values, typed keys (as generators) and registered pytree nodes."""

    name = "jax"

    def kind_of(self, value: object) -> str | None:
        return "jax" if isinstance(value, jax.Array) and not _is_key(value) else None

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
        return _placed_like(numpy_view(tensor).astype(like.dtype), like)

    def loads_by_copy(self, target: object) -> bool:
        return False

    def refusal(self, node_type: str, target: object, state: Any) -> str | None:
        return _key_refusal(target, state) if node_type == _KEY else None

    def generator_state(self, value: object) -> tuple[str, Any] | None:
        if isinstance(value, jax.Array) and _is_key(value):
            impl = str(jax.random.key_impl(value))
            return _KEY, {"impl": impl, "data": jax.random.key_data(value)}
        return None

    def restore_generator(self, node_type: str, target: object, state: Any) -> Any:
        if node_type != _KEY:
            raise CheckpointFormatError(f"unknown tree node type {node_type!r}")
        key = jax.random.wrap_key_data(jnp.asarray(state["data"]), impl=state["impl"])
        return _placed_like(key, target)

    def global_rng_state(self) -> Any | None:
        return {name: getattr(jax.config, name) for name in _RNG_CONFIG}

    def set_global_rng_state(self, state: Any) -> None:
        for name, saved in state.items() if isinstance(state, dict) else ():
            mine = getattr(jax.config, name, saved)
            if mine != saved:
                warnings.warn(
                    f"the checkpoint was saved with {name}={saved!r}, this process has "
                    f"{mine!r}: the same keys draw other numbers; call "
                    f"jax.config.update({name!r}, {saved!r}) before resuming to repeat them",
                    stacklevel=2,
                )

    def node_children(self, value: object) -> list[tuple[str | int, Any]] | None:
        if value is None or isinstance(value, (jax.Array, dict, list, tuple)):
            return None  # leaves, and the built-in containers trainhooks handles itself
        entries, treedef = jax.tree_util.tree_flatten_with_path(
            value, is_leaf=lambda child: child is not value
        )
        if jax.tree_util.treedef_is_leaf(treedef):
            return None
        found = [_child_name(path[-1]) for path, _ in entries]
        names: list[str | int] = [name for name in found if name is not None]
        if len(names) != len(entries) or len(set(names)) != len(names):
            names = list(range(len(entries)))  # keys JSON cannot hold: positions instead
        return list(zip(names, (child for _, child in entries), strict=True))

    def rebuild_node(self, target: Any, children: list[Any]) -> Any:
        treedef = jax.tree_util.tree_structure(target, is_leaf=lambda child: child is not target)
        return jax.tree_util.tree_unflatten(treedef, children)

    def value_name(self, value: object) -> tuple[str, str] | None:
        return None

    def decode_value(self, node_type: str, text: str) -> Any:
        raise CheckpointFormatError(f"unknown tree node type {node_type!r}")


def _is_key(array: Any) -> bool:
    return bool(jnp.issubdtype(array.dtype, jax.dtypes.prng_key))


def _placed_like(array: Any, like: object) -> Any:
    """``array`` as a JAX array on ``like``'s device or sharding when ``like`` is committed
    to one (an uncommitted target gives an uncommitted array, free to move as it was)."""
    if isinstance(like, jax.Array) and like.committed:
        return jax.device_put(array, like.sharding)
    return jnp.asarray(array) if isinstance(array, np.ndarray) else array


def _child_name(entry: Any) -> str | int | None:
    """The name a pytree key path entry gives its child: a field, a dict key, a position."""
    for attribute in ("name", "key", "idx"):  # GetAttrKey, DictKey / FlattenedIndexKey, ...
        name = getattr(entry, attribute, None)
        if isinstance(name, (str, int)) and not isinstance(name, bool):
            return name
    return None


@functools.lru_cache(maxsize=16)
def _known_impl(impl: str) -> bool:
    try:
        jax.random.key(0, impl=impl)
    except (ValueError, TypeError, KeyError):
        return False
    return True


def _key_refusal(target: object, state: Any) -> str | None:
    """Why a saved key cannot become ``target``'s: malformed, unknown or other impl, shape."""
    impl = state.get("impl") if isinstance(state, dict) else None
    data = state.get("data") if isinstance(state, dict) else None
    if not isinstance(impl, str) or data is None:
        return "the checkpoint's JAX key has no 'impl' name or no 'data'"
    if not _known_impl(impl):
        return f"the checkpoint holds a key of the PRNG implementation {impl!r}, unknown here"
    if not (isinstance(target, jax.Array) and _is_key(target)):
        return None
    mine = str(jax.random.key_impl(target))
    if mine != impl:
        return (
            f"the checkpoint holds a {impl} key, the target is a {mine} key; create the "
            f"target with jax.random.key(seed, impl={impl!r})"
        )
    saved, expected = tuple(getattr(data, "shape", ())), jax.random.key_data(target).shape
    if saved != tuple(expected):
        return (
            f"the checkpoint holds key data of shape {list(saved)}, the target key's data "
            f"has shape {list(expected)}"
        )
    return None


ADAPTER: ArrayAdapter = JaxAdapter()
