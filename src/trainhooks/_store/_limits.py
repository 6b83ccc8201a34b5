"""The format's limits, defined once for the writer and every reader.

Readers refuse a file past a limit before they allocate for it, so a hostile file cannot
make trainhooks allocate much more than a legitimate file of the same size, nor recurse
without bound. The writer refuses, before it writes anything, a checkpoint past the same
limits, so a save that returns can always be read back. Each check returns what is wrong
(or None) and leaves the error type to its caller: a reader reports corruption, the writer
a ``CheckpointFormatError`` naming the offending path in the state.
"""

from __future__ import annotations

import re

import numpy as np

MAX_TENSORS = 65_536
"""Tensors per checkpoint: hundreds of times what large models hold (a 70B model with Adam
state has about 3,000), and the base the byte caps below are sized from."""

MAX_NAME_LENGTH = 1024
"""Characters in a tensor name (its path in the state, joined by ``/``)."""

MAX_RANK = 64
"""Dimensions of one tensor (NumPy's own limit)."""

MAX_TREE_DEPTH = 200
"""JSON nesting of the state tree and of the metadata; a scalar counts one level. A dict
of the state costs three levels (node, ``items``, ``[key, node]`` pair), a list two."""

MANIFEST_BYTES_PER_TENSOR = 512
"""Manifest bytes budgeted per tensor: its record (about 150 bytes plus its name) and its
tree node (about 50 plus the path's keys and its name again), for names of ~100 chars."""

MAX_MANIFEST_BYTES = MAX_TENSORS * MANIFEST_BYTES_PER_TENSOR  # 32 MiB
"""Real manifests are kilobytes. Parsing JSON costs at most ~25 bytes of memory per byte
of input (a list of empty objects), so this bounds a reader's memory for the manifest."""

MAX_HEADER_BYTES = MAX_MANIFEST_BYTES
"""A safetensors header entry is smaller than the manifest record of the same tensor, so
every header the writer admits is smaller than its manifest."""

MAX_SEQUENCE = 2**63 - 1
"""Commit numbers fit a signed 64-bit integer, as any JSON reader holds them."""

CHECKSUM_DIGITS = 10
"""Digits of the widest crc32c (4,294,967,295): the writer sizes a manifest with every
checksum at this width before the checksums are known."""


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a tensor, or None."""
    if len(name) > MAX_NAME_LENGTH:
        return (
            f"its tensor name {_short(name)} is {len(name):,} characters long, over the "
            f"limit of {MAX_NAME_LENGTH:,} every reader enforces"
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return (
            f"its tensor name {_short(name)} holds a lone surrogate, which UTF-8 (the "
            "encoding of the safetensors header) cannot hold"
        )
    return None


def _short(name: str, keep: int = 40) -> str:
    return repr(name) if len(name) <= 2 * keep else f"{name[:keep]!r}...{name[-keep:]!r}"


def rank_problem(rank: int) -> str | None:
    """Why a tensor of ``rank`` dimensions cannot be stored, or None."""
    if rank > MAX_RANK:
        return f"it has {rank} dimensions, over the limit of {MAX_RANK} every reader enforces"
    return None


def count_problem(count: int) -> str | None:
    """Why ``count`` tensors cannot be stored in one checkpoint, or None."""
    if count > MAX_TENSORS:
        return f"{count:,} tensors are over the limit of {MAX_TENSORS:,} per checkpoint"
    return None


def depth_problem(depth: int) -> str | None:
    """Why a value reaching JSON level ``depth`` cannot be stored, or None."""
    if depth > MAX_TREE_DEPTH:
        return (
            f"it is nested past the limit of {MAX_TREE_DEPTH} JSON levels every reader "
            "enforces (a dict costs three levels, a list or tuple two)"
        )
    return None


def size_problem(what: str, nbytes: int, cap: int) -> str | None:
    """Why a ``what`` of ``nbytes`` is too large, or None."""
    if nbytes > cap:
        return f"the {what} would be {nbytes:,} bytes, over the cap of {cap:,} bytes"
    return None


def json_depth(value: object, limit: int = MAX_TREE_DEPTH + 1) -> int:
    """Nesting depth of a JSON value (a scalar is 1), iteratively, stopping once past ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        stack.extend((child, depth + 1) for child in children)
    return deepest


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))
_SCAN_CHUNK = 1 << 20


def json_text_depth(text: bytes) -> int:
    """Container nesting of JSON text (scalars not counted), measured on the bytes before
    any parsing: strings removed by one regex, brackets kept, a running level summed in
    1 MiB chunks. C-speed and bounded memory, so a reader knows how deep a parser would
    recurse before it starts one."""
    # Without an escaped quote, every other piece between quotes is a string's content.
    outside = _STRING.sub(b"", text) if b'\\"' in text else b"".join(text.split(b'"')[0::2])
    brackets = outside.translate(_BRACKETS, _NOT_BRACKET)
    level, deepest = 0, 0
    for start in range(0, len(brackets), _SCAN_CHUNK):
        chunk = np.frombuffer(brackets, np.uint8, min(_SCAN_CHUNK, len(brackets) - start), start)
        running = np.cumsum(np.where(chunk == ord("["), 1, -1)) + level
        deepest = max(deepest, int(running.max()))
        level = int(running[-1])
    return deepest
