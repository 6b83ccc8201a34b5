"""Store test helpers: small checkpoints, file hashes, and forging tools that rewrite a
checkpoint *consistently* (checksums recomputed) so a test reaches the validators behind
the checksums, as an attacker who knows the format would."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import crc32c
import numpy as np

from trainhooks import CheckpointInfo, Saver

DATA = "tensors.safetensors"
MANIFEST = "manifest.json"


def state_for(step: int) -> dict[str, Any]:
    """A small state whose every value is derived from ``step`` (so a restore proves which)."""
    return {
        "weight": np.full((16, 8), step, np.float32),
        "bias": np.arange(5, dtype=np.int64) * step,
        "extra": {"half": np.full(3, step, np.float16), "count": step, "tag": f"s{step}"},
    }


def blank_state() -> dict[str, Any]:
    return {
        "weight": np.zeros((16, 8), np.float32),
        "bias": np.zeros(5, np.int64),
        "extra": {"half": np.zeros(3, np.float16), "count": -1, "tag": ""},
    }


def step_of(state: dict[str, Any]) -> int:
    """The step a restored ``state_for`` state came from, after checking it is coherent."""
    step = state["extra"]["count"]
    assert np.all(state["weight"] == step), "weight does not match the restored step"
    assert state["bias"].tolist() == [i * step for i in range(5)]
    assert state["extra"]["tag"] == f"s{step}"
    return step


def save_steps(directory: Path, steps: list[int], **saver_kw: Any) -> list[CheckpointInfo]:
    with Saver(**saver_kw) as saver:
        return [saver.save(state_for(s), directory, step=s) for s in steps]


def hash_tree(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` (relative path -> digest)."""
    digests = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = Path(root, name)
            digests[os.fspath(path.relative_to(directory))] = hashlib.sha256(
                path.read_bytes()
            ).hexdigest()
    return digests


def read_header(path: Path) -> tuple[int, dict[str, Any]]:
    """(header length, header JSON) of a safetensors file."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return length, json.loads(raw[8 : 8 + length])


def tensor_byte_range(path: Path, name: str) -> tuple[int, int]:
    """Absolute byte range of tensor ``name`` in a safetensors file."""
    length, header = read_header(path)
    begin, end = header[name]["data_offsets"]
    return 8 + length + begin, 8 + length + end


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def rewrite_manifest(checkpoint: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit the manifest and recompute its self-checksum, as a forger would."""
    path = checkpoint / MANIFEST
    body = json.loads(path.read_bytes())
    body.pop("manifest_crc32c", None)
    change(body)
    body["manifest_crc32c"] = crc32c.crc32c(_canonical(body))
    path.write_bytes(_canonical(body))


def rewrite_header(
    checkpoint: Path,
    change: Callable[[dict[str, Any]], None],
    *,
    raw_length: int | None = None,
    data: bytes | None = None,
) -> None:
    """Rewrite the safetensors header (and optionally the data region), then make the
    manifest agree with the new file's size and header checksum."""
    path = checkpoint / DATA
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    change(header)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    prefix = struct.pack("<Q", len(text) if raw_length is None else raw_length)
    body = raw[8 + length :] if data is None else data
    path.write_bytes(prefix + text + body)

    def agree(manifest: dict[str, Any]) -> None:
        entry = manifest["files"][DATA]
        entry["size"] = len(prefix) + len(text) + len(body)
        entry["header_size"] = len(prefix) + len(text)
        entry["header_crc32c"] = crc32c.crc32c(text, crc32c.crc32c(prefix))

    rewrite_manifest(checkpoint, agree)


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ (1 << bit)]))
