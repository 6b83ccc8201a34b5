"""Limits every reader enforces before it allocates anything, so a hostile file cannot
make trainhooks allocate more than the file's own size or recurse without bound."""

from __future__ import annotations

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the cap safetensors itself applies
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
MAX_TENSORS = 1_000_000
MAX_NAME_LENGTH = 1024
MAX_RANK = 64
MAX_TREE_DEPTH = 200
