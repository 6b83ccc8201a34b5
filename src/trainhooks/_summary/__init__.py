"""Private: TensorBoard scalar summaries shared by hooks and listeners (``tensorboard`` is
imported only when a writer is created)."""

from __future__ import annotations

from trainhooks._summary._scalar import as_scalar, is_scalar_like
from trainhooks._summary._writer import (
    ScalarWriter,
    import_tensorboard_writer,
    require_tensorboard,
    tensorboard_available,
)

__all__ = [
    "ScalarWriter",
    "as_scalar",
    "import_tensorboard_writer",
    "is_scalar_like",
    "require_tensorboard",
    "tensorboard_available",
]
