"""``RNGState``: the global random number generators as one checkpointable object.

Put ``RNGState()`` in the state mapping to make a resumed run draw the same random numbers
as an uninterrupted one: Python's ``random``, NumPy's legacy global generator and, when
torch is in use, torch's CPU generator, every CUDA device's (once CUDA is initialised) and
MPS's (each framework's adapter says what its process-wide random state is). A device
generator saved where this process has no such device is skipped with a warning. JAX has
no global generator (its keys belong in the state, where they round-trip as keys); for JAX
this records the configuration that decides what a key draws, and warns on a resume under
another one. Each is stored as plain JSON/arrays, never pickled.
"""

from __future__ import annotations

import random
from typing import Any

from trainhooks._exceptions import CheckpointCorruptError
from trainhooks._state._adapters._registry import loaded_adapters

__all__ = ["RNGState"]


class RNGState:
    """Checkpoints the process-wide random generators (``random``, NumPy, torch's CPU,
    CUDA and MPS generators) and JAX's PRNG configuration."""

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss_next = random.getstate()
        state: dict[str, Any] = {
            "python": {"version": version, "state": list(internal), "gauss_next": gauss_next}
        }
        for adapter in loaded_adapters():
            framework_state = adapter.global_rng_state()
            if framework_state is not None:
                state[adapter.name] = framework_state
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Set the generators from ``state``; a state no generator produces (a forged or
        damaged checkpoint) raises ``CheckpointCorruptError`` and leaves them unchanged."""
        before = random.getstate(), [(a, a.global_rng_state()) for a in loaded_adapters()]
        try:
            self._set(state)
        except (TypeError, ValueError, OverflowError, KeyError, IndexError, RuntimeError) as exc:
            random.setstate(before[0])
            for adapter, previous in before[1]:
                if previous is not None:
                    adapter.set_global_rng_state(previous)
            raise CheckpointCorruptError(
                f"the saved RNGState is invalid ({type(exc).__name__}: {exc})"
            ) from None

    def _set(self, state: dict[str, Any]) -> None:
        python = state["python"]
        random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
        for adapter in loaded_adapters():
            if adapter.name in state:
                adapter.set_global_rng_state(state[adapter.name])

    def __repr__(self) -> str:
        return "RNGState()"
