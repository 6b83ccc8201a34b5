"""The manifest: the JSON file written last in a checkpoint, whose presence commits nothing
by itself (the directory rename does) but which describes and checksums everything else.

It holds the format version, step, wall time, each file's size and header checksum, each
tensor's dtype/shape/file/offsets/crc32c, the state's tree (JSON) and user metadata, and a
crc32c over its own canonical body so that a flipped bit anywhere in it is caught.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, TypeGuard

import crc32c

from trainhooks._store._dtypes import DTYPE_ITEMSIZE
from trainhooks._store._limits import (
    CHECKSUM_DIGITS,
    MAX_SEQUENCE,
    MAX_TENSORS,
    MAX_TREE_DEPTH,
    json_text_depth,
    name_problem,
    rank_problem,
)

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
    sequence: int = 0  # the commit's place in its directory's history; 0: not recorded

    @property
    def nbytes(self) -> int:
        """Bytes of the data files (the manifest's own size is added by its reader)."""
        return sum(f["size"] for f in self.files.values())

    def to_bytes(self) -> bytes:
        body = self._body()
        body[_CHECKSUM_KEY] = crc32c.crc32c(_canonical(body))
        return _canonical(body)

    def size_bound(self) -> int:
        """Length of :meth:`to_bytes` with its own checksum counted at its widest (10 digits)."""
        return len(_canonical(self._body())) + len(f',"{_CHECKSUM_KEY}":') + CHECKSUM_DIGITS

    def _body(self) -> dict[str, Any]:
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
        if self.sequence:
            body["sequence"] = self.sequence
        return body

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse and validate manifest bytes; any flaw is a :class:`ManifestError`.

        Work is bounded before the content is trusted: the caller caps the size; the
        checksum is verified on the raw bytes, so damaged bytes never reach the JSON parser;
        the nesting depth is measured on the bytes too, so the parser's recursion is bounded
        and no check after parsing needs to walk the whole tree. Since the checksum covers
        the exact bytes, a digit changed anywhere (even one that parses to the same value)
        is caught without re-serialising what was parsed.
        """
        data = data.rstrip(b"\n")
        _check_seal(data)
        if json_text_depth(data) > MAX_TREE_DEPTH + 1:  # the tree and metadata sit at level 2
            raise ManifestError(f"manifest JSON is nested deeper than {MAX_TREE_DEPTH} levels")
        try:
            body = json.loads(data, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise ManifestError(f"manifest is not valid JSON ({exc})") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT_NAME:
            raise ManifestError("not a trainhooks manifest (missing 'format')")
        version = body.get("format_version")
        if not _is_int(version) or version < 1:
            raise ManifestError(
                f"manifest 'format_version' is {version!r}, not a version trainhooks ever wrote"
            )
        if version > FORMAT_VERSION:
            raise ManifestError(
                f"format version {version} is newer than this trainhooks reads "
                f"({FORMAT_VERSION}); upgrade trainhooks",
                newer=True,
            )
        body.pop(_CHECKSUM_KEY, None)
        try:
            return _from_body(body)
        except (TypeError, ValueError, OverflowError, KeyError, RecursionError) as exc:
            # the checks below should leave nothing to these; never let one escape untyped
            cause = f"{type(exc).__name__}: {exc}"
            raise ManifestError(f"manifest fails its schema ({cause})") from None


_SEAL = re.compile(rb',"' + _CHECKSUM_KEY.encode() + rb'":(\d{1,10})(?=[,}])')
_VERSION = re.compile(rb'"format_version":(\d{1,6})[,}]')


def _check_seal(data: bytes) -> None:
    """Verify the manifest's own checksum on its raw bytes: it covers the canonical JSON of
    every other key, which is exactly ``data`` without its ``,"manifest_crc32c":N`` member
    (the first one: only ``files`` and ``format`` sort before it, and hold no such key)."""
    match = _SEAL.search(data)
    if match is not None:
        unsealed = data[: match.start()] + data[match.end() :]
        if int(match.group(1)) == crc32c.crc32c(unsealed):
            return
    version = _VERSION.search(data)
    claimed = int(version.group(1)) if version else None
    hint = (
        f" (it claims format version {claimed}; if a newer trainhooks wrote it, upgrade)"
        if claimed is not None and claimed > FORMAT_VERSION
        else ""
    )
    what = "checksum mismatch" if match else "no checksum found"
    raise ManifestError(f"manifest {what}: the manifest is corrupt{hint}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _from_body(body: dict[str, Any]) -> Manifest:
    step, when, files = body.get("step"), body.get("time"), body.get("files")
    tensors, tree = body.get("tensors"), body.get("tree")
    if not _is_int(step) or step < 0:
        raise ManifestError(f"manifest 'step' is {_short(step)}, not a non-negative integer")
    if not _is_finite(when):
        raise ManifestError(f"manifest 'time' is {_short(when)}, not a finite number")
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and all(_is_int(x) and x >= 0 for x in v.values())
        for v in files.values()
    ):
        raise ManifestError("manifest 'files' is invalid")
    if not isinstance(tensors, list) or len(tensors) > MAX_TENSORS:
        raise ManifestError("manifest 'tensors' is invalid")
    metadata = body.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ManifestError("manifest 'metadata' is not an object")
    records = [_record(raw, files) for raw in tensors]
    retention = body.get("retention")
    if retention is not None:
        _check_retention(retention)
    sequence = body.get("sequence", 0)
    if not _is_int(sequence) or not 0 <= sequence <= MAX_SEQUENCE:
        raise ManifestError(f"manifest 'sequence' is {_short(sequence)}, not a commit number")
    return Manifest(
        step,
        float(when),
        files,
        records,
        tree,
        metadata,
        body["format_version"],
        retention,
        sequence,
    )


def _check_retention(raw: Any) -> None:
    """The retention record a writer left: its shape is checked here, so that one forged
    record can never make the next save fail (``RetentionRecord`` reads it back)."""
    managed = raw.get("managed") if isinstance(raw, dict) else None
    delete = raw.get("delete") if isinstance(raw, dict) else None
    keep = raw.get("next_keep_time") if isinstance(raw, dict) else None
    ok = (
        isinstance(managed, list)
        and all(
            isinstance(item, list)
            and len(item) == 2
            and _is_int(item[0])
            and item[0] >= 0
            and _is_finite(item[1])
            for item in managed
        )
        and isinstance(delete, list)
        and all(_is_int(step) and step >= 0 for step in delete)
        and (keep is None or _is_finite(keep))
    )
    if not ok:
        raise ManifestError("manifest 'retention' record is invalid")


def _record(raw: Any, files: dict[str, Any]) -> TensorRecord:
    if not isinstance(raw, dict):
        raise ManifestError("a manifest tensor entry is not an object")
    name, file, dtype = raw.get("name"), raw.get("file"), raw.get("dtype")
    shape, offsets, crc = raw.get("shape"), raw.get("offsets"), raw.get("crc32c")
    if not (
        isinstance(name, str)
        and name_problem(name) is None
        and isinstance(file, str)
        and file in files
        and isinstance(dtype, str)
        and dtype in DTYPE_ITEMSIZE
        and _int_list(shape)
        and rank_problem(len(shape)) is None
        and all(d >= 0 for d in shape)
        and _int_list(offsets)
        and len(offsets) == 2
        and all(o >= 0 for o in offsets)
        and _is_int(crc)
    ):
        raise ManifestError(f"manifest entry for tensor {_short(name)} is invalid")
    return TensorRecord(name, file, dtype, tuple(shape), offsets[0], offsets[1], crc)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_list(value: object) -> TypeGuard[list[int]]:
    return isinstance(value, list) and all(_is_int(item) for item in value)


def _is_finite(value: object) -> TypeGuard[int | float]:
    """A JSON number that is a finite double (an int too large for one is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, int) or value.bit_length() < 200 else "a huge int"
    return text if len(text) <= limit else text[:limit] + "..."
