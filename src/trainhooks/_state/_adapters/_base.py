"""``ArrayAdapter``: everything the state layer needs to know about one array framework.

The rest of ``_state`` is framework-free: it asks ``_registry`` for the adapter of a value
(or of a saved kind) and talks to it through this protocol. Each framework lives in one
module (``_numpy``, ``_torch``, ``_jax``) that alone imports it, and is loaded only once
the process has imported the framework itself, so ``import trainhooks`` stays
framework-free. Adding a framework means one new module and one name in ``_registry``.

Why these members and no others: they are the points where frameworks actually differ
when a state is checkpointed (recognising an array, reaching its bytes without a copy,
making an empty one to read into, copying a verified tensor into an existing one, copying
it into a reusable host buffer for a background save, the random generators, the
containers of its own that must be rebuilt rather than refilled) and restored without
surprises (what an object's ``load_state_dict`` would refuse, found before anything is
written).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from trainhooks._state._mapped import MappedTensor

__all__ = ["ArrayAdapter", "ArrayBytes", "Fill", "Staged"]

ArrayBytes = tuple[str, tuple[int, ...], memoryview]  # (safetensors dtype, shape, flat bytes)
Fill = Callable[[memoryview], None]  # writes a tensor's bytes into a fresh array's memory


class Staged(NamedTuple):
    """An array copied into a host buffer for a background save (``ArrayAdapter.stage``)."""

    array: ArrayBytes
    """The copy's dtype code, shape and flat bytes (a view of ``buffer``)."""
    buffer: Any
    """The buffer to hand back as ``reuse`` at the next snapshot of the same array."""
    ready: Callable[[], None] | None
    """Waits until an asynchronous copy (device to host) has landed; None if it has."""


class ArrayAdapter(Protocol):
    """One array framework, as the state layer sees it.

    A *kind* is the name a saved tensor records for the type it came from (``"numpy"``,
    ``"numpy_scalar"``, ``"torch"``, ``"jax"``); kinds and the tree node types of a
    framework's other objects (``"torch_generator"``, ``"torch_dtype"``) start with the
    framework's ``name``, which is how a checkpoint's values find their adapter.
    """

    name: str
    """The framework's top-level module; the adapter is used only once it is imported."""

    # -- arrays -------------------------------------------------------------------------
    def kind_of(self, value: object) -> str | None:
        """The kind of ``value`` if it is one of this framework's arrays, else None."""
        ...

    def array_bytes(self, value: Any, where: str) -> ArrayBytes:
        """The dtype code, shape and flat bytes of an array, copied only when the array is
        not already dense, contiguous, little-endian host memory."""
        ...

    def stage(self, value: Any, where: str, reuse: Any) -> Staged:
        """Copy an array into a host buffer, so that changing ``value`` afterwards does not
        change what is saved. ``reuse`` is the buffer the same array was staged into last
        time (or None): it is filled again when it still fits, so a save allocates (and
        first touches) no new memory once the buffers exist."""
        ...

    def new_array(self, code: str, shape: tuple[int, ...], kind: str, fill: Fill) -> Any:
        """A fresh array of ``kind`` whose bytes ``fill`` writes (one write, no copy after)."""
        ...

    def view(self, tensor: MappedTensor) -> Any:
        """An array of this framework *viewing* a verified tensor: only for copying at once."""
        ...

    def can_fill(self, target: Any) -> bool:
        """Whether ``target`` (one of this framework's arrays) can be overwritten in place."""
        ...

    def copy_into(self, target: Any, tensor: MappedTensor) -> None:
        """Copy ``tensor`` into ``target`` (same shape; cast to the target's dtype)."""
        ...

    def cast_copy(self, tensor: MappedTensor, like: Any) -> Any:
        """A fresh array of the framework and dtype of ``like`` holding ``tensor``."""
        ...

    # -- objects restored through load_state_dict, and generators ----------------------
    def loads_by_copy(self, target: object) -> bool:
        """Whether ``target.load_state_dict`` copies the tensors it gets (so it may get views
        of the checkpoint's mapping instead of fresh copies)."""
        ...

    def refusal(self, node_type: str, target: object, state: Any) -> str | None:
        """Why restoring ``state`` into ``target`` would fail, found before anything is
        written; ``node_type`` is ``"stateful"`` (``load_state_dict``) or a generator's."""
        ...

    def generator_state(self, value: object) -> tuple[str, Any] | None:
        """(node type, state) if ``value`` is one of this framework's random generators
        (a ``torch.Generator``, a NumPy ``Generator``, a JAX typed key)."""
        ...

    def restore_generator(self, node_type: str, target: object, state: Any) -> Any:
        """``target`` with ``state`` set, or a new generator when ``target`` is none."""
        ...

    def global_rng_state(self) -> Any | None:
        """The state of the framework's process-wide generator, if it has one."""
        ...

    def set_global_rng_state(self, state: Any) -> None:
        """Restore what ``global_rng_state`` returned."""
        ...

    # -- the framework's own containers ------------------------------------------------
    def node_children(self, value: object) -> list[tuple[str | int, Any]] | None:
        """The children of ``value``, each with its name (a field, key or position), if it
        is a container node of this framework (a registered JAX pytree node such as an
        equinox module), else None. Structure kept outside the children is not saved."""
        ...

    def rebuild_node(self, target: Any, children: list[Any]) -> Any:
        """A node of ``target``'s own type and structure holding ``children`` (in the
        order ``node_children(target)`` gave them): how immutable nodes are restored."""
        ...

    # -- other framework values --------------------------------------------------------
    def value_name(self, value: object) -> tuple[str, str] | None:
        """(node type, text) for a small framework value stored by name (a torch dtype)."""
        ...

    def decode_value(self, node_type: str, text: str) -> Any:
        """The value ``value_name`` named; raises ``CheckpointFormatError`` if unknown."""
        ...
