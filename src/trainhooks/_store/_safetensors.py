"""The safetensors layout: building a header for the writer and validating one for readers.

Layout: 8-byte little-endian header length ``n``, ``n`` bytes of JSON (padded with spaces so
the data starts 8-byte aligned), then the tensors' bytes back to back. ``safetensors``'
own ``safe_open``/``load_file`` read our files unchanged.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from trainhooks._store._dtypes import DTYPE_ITEMSIZE
from trainhooks._store._limits import MAX_HEADER_BYTES, MAX_TENSORS, name_problem, rank_problem

__all__ = ["HeaderEntry", "HeaderError", "build_header", "parse_header"]


class HeaderError(ValueError):
    """A header that breaks the layout; the caller adds file, step and path to the message."""

    def __init__(self, message: str, tensor: str | None = None) -> None:
        super().__init__(message)
        self.tensor = tensor


@dataclass(frozen=True)
class HeaderEntry:
    """One tensor in a safetensors file; ``begin``/``end`` are absolute file offsets."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def build_header(
    tensors: Sequence[tuple[str, str, Sequence[int], int]], metadata: Mapping[str, str]
) -> tuple[bytes, list[HeaderEntry]]:
    """Header bytes (length prefix included) and absolute offsets for ``(name, dtype, shape,
    nbytes)`` tensors laid out in the given order."""
    body: dict[str, Any] = {"__metadata__": dict(metadata)}
    relative = 0
    spans = []
    for name, dtype, shape, nbytes in tensors:
        body[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [relative, relative + nbytes],
        }
        spans.append((name, dtype, tuple(shape), relative, relative + nbytes))
        relative += nbytes
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    start = 8 + len(text)
    entries = [HeaderEntry(n, d, s, start + b, start + e) for n, d, s, b, e in spans]
    return struct.pack("<Q", len(text)) + text, entries


def header_length(prefix: bytes, file_size: int) -> int:
    """Validate the 8-byte length prefix against the caps and the file's size."""
    if len(prefix) != 8:
        raise HeaderError(f"file is {file_size} bytes, too short for a safetensors header")
    length: int = struct.unpack("<Q", prefix)[0]
    if length > MAX_HEADER_BYTES or length > file_size - 8:
        raise HeaderError(
            f"header length {length} exceeds the file ({file_size} bytes) or the "
            f"{MAX_HEADER_BYTES}-byte cap"
        )
    return length


def parse_header(header: bytes, file_size: int) -> tuple[list[HeaderEntry], dict[str, str]]:
    """Validate a header's JSON (without the length prefix) against a file of ``file_size``.

    Checks dtype allow-list, rank, non-negative shapes, shape x itemsize = byte range,
    contiguous offsets inside the file: everything a reader needs before allocating.
    """
    try:
        body = json.loads(header)
    except (ValueError, RecursionError) as exc:
        raise HeaderError(f"header is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise HeaderError("header JSON is not an object")
    metadata = body.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise HeaderError("header __metadata__ must map strings to strings")
    if len(body) > MAX_TENSORS:
        raise HeaderError(f"header lists {len(body)} tensors, more than the {MAX_TENSORS} cap")
    start = 8 + len(header)
    entries = sorted((_entry(name, raw, start) for name, raw in body.items()), key=_order)
    position = start
    for entry in entries:
        if entry.begin != position:
            raise HeaderError(
                f"tensor {entry.name!r} starts at byte {entry.begin}, expected {position}: "
                "offsets overlap or leave a gap",
                entry.name,
            )
        position = entry.end
    if position != file_size:
        raise HeaderError(f"tensor data ends at byte {position} but the file has {file_size} bytes")
    return entries, metadata


def _order(entry: HeaderEntry) -> tuple[int, int]:
    return entry.begin, entry.end


def _entry(name: str, raw: Any, start: int) -> HeaderEntry:
    problem = name_problem(name)
    if problem is not None:
        raise HeaderError(f"a tensor is refused: {problem}")
    if not isinstance(raw, dict):
        raise HeaderError(f"entry for tensor {name!r} is not an object", name)
    dtype, shape, offsets = raw.get("dtype"), raw.get("shape"), raw.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_ITEMSIZE:
        raise HeaderError(f"tensor {name!r} has unknown dtype {_short(dtype)}", name)
    if not _int_list(shape) or rank_problem(len(shape)) or any(d < 0 for d in shape):
        raise HeaderError(f"tensor {name!r} has an invalid shape {_short(shape)}", name)
    if not _int_list(offsets) or len(offsets) != 2 or not 0 <= offsets[0] <= offsets[1]:
        raise HeaderError(f"tensor {name!r} has invalid data_offsets {_short(offsets)}", name)
    nbytes = math.prod(shape) * DTYPE_ITEMSIZE[dtype]  # Python ints: no overflow to wrap
    if nbytes != offsets[1] - offsets[0]:
        raise HeaderError(
            f"tensor {name!r}: shape {shape} of {dtype} needs {nbytes} bytes but its "
            f"data_offsets span {offsets[1] - offsets[0]}",
            name,
        )
    return HeaderEntry(name, dtype, tuple(shape), start + offsets[0], start + offsets[1])


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _int_list(value: object) -> TypeGuard[list[int]]:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    )
