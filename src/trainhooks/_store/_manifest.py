"""The manifest: the JSON file written last in a checkpoint, whose presence commits nothing
by itself (the directory rename does) but which describes and checksums everything else.

It holds the format version, step, wall time, each file's size and header checksum, each
tensor's dtype/shape/file/offsets/crc32c, the state's tree (JSON) and user metadata, and a
crc32c over its own canonical body so that a flipped bit anywhere in it is caught.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeGuard

import crc32c

from trainhooks._store._dtypes import DTYPE_ITEMSIZE
from trainhooks._store._limits import MAX_NAME_LENGTH, MAX_RANK, MAX_TENSORS, MAX_TREE_DEPTH

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "Manifest", "ManifestError", "TensorRecord"]

FORMAT_NAME = "trainhooks.checkpoint"
FORMAT_VERSION = 1
_CHECKSUM_KEY = "manifest_crc32c"


class ManifestError(ValueError):
    """A manifest that fails its checksum or schema; ``newer`` marks an unknown newer version."""

    def __init__(self, message: str, *, newer: bool = False) -> None:
        super().__init__(message)
        self.newer = newer


@dataclass(frozen=True)
class TensorRecord:
    """One tensor as the manifest records it (``begin``/``end`` are absolute file offsets)."""

    name: str
    file: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int
    crc32c: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "file": self.file,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "offsets": [self.begin, self.end],
            "crc32c": self.crc32c,
        }


@dataclass(frozen=True)
class Manifest:
    step: int
    time: float
    files: dict[str, dict[str, int]]  # name -> {"size", "header_size", "header_crc32c"}
    tensors: list[TensorRecord]
    tree: Any
    metadata: dict[str, Any]
    format_version: int = FORMAT_VERSION
    retention: dict[str, Any] | None = None  # the saver's RetentionRecord, as JSON

    @property
    def nbytes(self) -> int:
        """Bytes of the data files (the manifest's own size is added by its reader)."""
        return sum(f["size"] for f in self.files.values())

    def to_bytes(self) -> bytes:
        body = {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "step": self.step,
            "time": self.time,
            "files": self.files,
            "tensors": [t.to_json() for t in self.tensors],
            "tree": self.tree,
            "metadata": self.metadata,
        }
        if self.retention is not None:
            body["retention"] = self.retention
        body[_CHECKSUM_KEY] = crc32c.crc32c(_canonical(body))
        return _canonical(body)

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        try:
            body = json.loads(data, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise ManifestError(f"manifest is not valid JSON ({exc})") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT_NAME:
            raise ManifestError("not a trainhooks manifest (missing 'format')")
        version = body.get("format_version")
        if not _is_int(version):
            raise ManifestError("manifest 'format_version' is missing or not an integer")
        newer = version > FORMAT_VERSION
        stored = body.pop(_CHECKSUM_KEY, None)
        if stored != crc32c.crc32c(_canonical(body)):
            hint = f" (it claims format version {version}; if a newer trainhooks wrote it, upgrade)"
            raise ManifestError(
                f"manifest checksum mismatch: the manifest is corrupt{hint if newer else ''}"
            )
        if newer:
            raise ManifestError(
                f"format version {version} is newer than this trainhooks reads "
                f"({FORMAT_VERSION}); upgrade trainhooks",
                newer=True,
            )
        if data.rstrip(b"\n") != _canonical({**body, _CHECKSUM_KEY: stored}):
            # We write canonical JSON; other bytes were altered after writing, even where they
            # parse to the same values (e.g. a float's last digit).
            raise ManifestError("manifest bytes are not as written: the manifest is corrupt")
        return _from_body(body)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _from_body(body: dict[str, Any]) -> Manifest:
    step, when, files = body.get("step"), body.get("time"), body.get("files")
    tensors, tree = body.get("tensors"), body.get("tree")
    if not _is_int(step) or step < 0 or not isinstance(when, (int, float)):
        raise ManifestError("manifest 'step' or 'time' is missing or invalid")
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and all(_is_int(x) and x >= 0 for x in v.values())
        for v in files.values()
    ):
        raise ManifestError("manifest 'files' is invalid")
    if not isinstance(tensors, list) or len(tensors) > MAX_TENSORS:
        raise ManifestError("manifest 'tensors' is invalid")
    if _depth(tree) > MAX_TREE_DEPTH:
        raise ManifestError(f"manifest tree is nested deeper than {MAX_TREE_DEPTH}")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ManifestError("manifest 'metadata' is not an object")
    records = [_record(raw, files) for raw in tensors]
    retention = body.get("retention")
    retention = retention if isinstance(retention, dict) else None
    return Manifest(
        step, float(when), files, records, tree, metadata, body["format_version"], retention
    )


def _record(raw: Any, files: dict[str, Any]) -> TensorRecord:
    if not isinstance(raw, dict):
        raise ManifestError("a manifest tensor entry is not an object")
    name, file, dtype = raw.get("name"), raw.get("file"), raw.get("dtype")
    shape, offsets, crc = raw.get("shape"), raw.get("offsets"), raw.get("crc32c")
    if not (
        isinstance(name, str)
        and len(name) <= MAX_NAME_LENGTH
        and isinstance(file, str)
        and file in files
        and isinstance(dtype, str)
        and dtype in DTYPE_ITEMSIZE
        and isinstance(shape, list)
        and len(shape) <= MAX_RANK
        and all(_is_int(d) and d >= 0 for d in shape)
        and isinstance(offsets, list)
        and len(offsets) == 2
        and all(_is_int(o) and o >= 0 for o in offsets)
        and _is_int(crc)
    ):
        raise ManifestError(f"manifest entry for tensor {name!r} is invalid")
    return TensorRecord(name, file, dtype, tuple(shape), offsets[0], offsets[1], crc)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _depth(node: Any, limit: int = MAX_TREE_DEPTH + 1) -> int:
    """Nesting depth of a JSON value, iteratively, stopping once past ``limit``."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = (
            value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        )
        stack.extend((child, depth + 1) for child in children)
    return deepest
