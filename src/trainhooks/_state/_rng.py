"""``RNGState``: the global random number generators as one checkpointable object.

Put ``RNGState()`` in the state mapping to make a resumed run draw the same random numbers
as an uninterrupted one: Python's ``random``, NumPy's legacy global generator and, when
torch is in use, torch's CPU generator. Each is stored as plain JSON/arrays, never pickled.
"""

from __future__ import annotations

import random
import sys
from typing import Any

import numpy as np

from trainhooks._exceptions import CheckpointCorruptError

__all__ = ["RNGState"]


class RNGState:
    """Checkpoints the process-wide random generators (``random``, NumPy, torch CPU)."""

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss_next = random.getstate()
        state: dict[str, Any] = {
            "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
            "numpy": np.random.get_state(legacy=False),
        }
        torch = sys.modules.get("torch")
        if torch is not None:
            state["torch"] = torch.get_rng_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Set the generators from ``state``; a state no generator produces (a forged or
        damaged checkpoint) raises ``CheckpointCorruptError`` and leaves them unchanged."""
        saved = (random.getstate(), np.random.get_state(legacy=False))
        try:
            self._set(state)
        except (TypeError, ValueError, OverflowError, KeyError, IndexError, RuntimeError) as exc:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            raise CheckpointCorruptError(
                f"the saved RNGState is invalid ({type(exc).__name__}: {exc})"
            ) from None

    def _set(self, state: dict[str, Any]) -> None:
        python = state["python"]
        random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
        np.random.set_state(state["numpy"])
        torch = sys.modules.get("torch")
        if torch is not None and "torch" in state:
            saved = state["torch"]
            if not isinstance(saved, torch.Tensor):
                saved = torch.as_tensor(np.asarray(saved))
            torch.set_rng_state(saved)

    def __repr__(self) -> str:
        return "RNGState()"
