"""Finding the adapter of a value or of a saved kind, without importing any framework.

An adapter module imports its framework, so it is loaded only when ``sys.modules`` shows
the process already imported that framework: a value of a framework nobody imported cannot
exist, and a checkpoint saved from torch restores as NumPy in a process without torch.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from trainhooks._state._adapters._base import ArrayAdapter, Fill

__all__ = ["adapter_for", "adapter_of", "is_framework", "loaded_adapters", "new_array"]

# Every framework, in the order values are offered to them; adding one is one name here
# and a module ``_<name>.py`` beside this one defining ``ADAPTER``.
_FRAMEWORKS = ("numpy", "torch", "jax")
_ALWAYS_LOADED = "numpy"  # trainhooks itself depends on NumPy
_loaded: dict[str, ArrayAdapter] = {}


def _adapter(name: str) -> ArrayAdapter:
    adapter = _loaded.get(name)
    if adapter is None:
        module = importlib.import_module(f"trainhooks._state._adapters._{name}")
        adapter = _loaded[name] = module.ADAPTER
    return adapter


def _in_use(name: str) -> bool:
    return name == _ALWAYS_LOADED or name in sys.modules


def loaded_adapters() -> list[ArrayAdapter]:
    """The adapters of the frameworks this process has imported, NumPy's first."""
    return [_adapter(name) for name in _FRAMEWORKS if _in_use(name)]


def adapter_of(value: object) -> tuple[ArrayAdapter, str] | None:
    """The adapter that recognises ``value`` as an array, and the array's kind."""
    for adapter in loaded_adapters():
        kind = adapter.kind_of(value)
        if kind is not None:
            return adapter, kind
    return None


def is_framework(kind: str) -> bool:
    """Whether a saved kind or node type belongs to a framework trainhooks knows."""
    return kind.partition("_")[0] in _FRAMEWORKS


def adapter_for(kind: str) -> ArrayAdapter | None:
    """The adapter of a saved kind or node type (``"torch"``, ``"torch_generator"``); None
    when its framework is unknown or not imported by this process."""
    name = kind.partition("_")[0]
    if name not in _FRAMEWORKS or not _in_use(name):
        return None
    return _adapter(name)


def new_array(code: str, shape: tuple[int, ...], kind: str, fill: Fill) -> Any:
    """A fresh array of the saved ``kind`` filled by ``fill``; NumPy when that kind's
    framework is not in use (as for ``trainhooks.load``)."""
    adapter = adapter_for(kind) or _adapter(_ALWAYS_LOADED)
    return adapter.new_array(code, shape, kind, fill)
