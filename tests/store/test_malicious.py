"""Hostile checkpoints: a clear typed error, nothing executed, nothing huge allocated.

The forgeries recompute every checksum (a crc is no signature), so these tests reach the
validators behind the checksums, as an attacker who knows the format would.
"""

from __future__ import annotations

import os
import pickle
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# A forged torch dtype naming a torch function is only dangerous where torch is imported
# (elsewhere the name decodes to a plain string), so the test imports it, whatever ran first.
import torch  # noqa: F401

from _support.store import (
    DATA,
    MANIFEST,
    blank_state,
    rewrite_header,
    rewrite_manifest,
    save_steps,
    step_of,
)
from trainhooks import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointFormatError,
    Saver,
    StateMismatchError,
    latest_checkpoint,
    list_checkpoints,
    load,
    verify_checkpoint,
)

TYPED = (CheckpointCorruptError, CheckpointFormatError)


class _Payload:
    """Unpickling this writes a marker file: proof that something executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({os.fspath(self.marker)!r}, 'w').write('pwned')",))


def _every_reader_refuses(checkpoint: Path, *, match: str | None = None) -> None:
    """verify, load and an explicit-step restore all raise a typed error naming the path."""
    readers: list[Callable[[], Any]] = [
        lambda: verify_checkpoint(checkpoint),
        lambda: load(checkpoint),
        lambda: Saver().restore(
            {"weight": np.zeros((16, 8), np.float32)}, checkpoint.parent, step=2
        ),
    ]
    for read in readers:
        with pytest.raises(TYPED) as caught:
            read()
        assert not isinstance(caught.value, StateMismatchError)
        assert checkpoint.name in str(caught.value)
        if match is not None:
            assert match in str(caught.value).lower(), str(caught.value)
    assert [i.step for i in list_checkpoints(checkpoint.parent)] == [1]
    assert latest_checkpoint(checkpoint.parent).step == 1


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """Step 1 stays good; step 2 is the one the tests tamper with."""
    return save_steps(tmp_path / "ckpts", [1, 2])[1].path


@pytest.mark.parametrize("target", [DATA, MANIFEST])
def test_pickle_payload_is_never_unpickled(target, victim, tmp_path) -> None:
    marker = tmp_path / "marker"
    (victim / target).write_bytes(pickle.dumps(_Payload(marker)))
    _every_reader_refuses(victim)
    assert not marker.exists(), "the pickle payload ran"


def test_stray_pickle_file_in_a_checkpoint_is_ignored(victim, tmp_path) -> None:
    marker = tmp_path / "marker"
    (victim / "model.pt").write_bytes(pickle.dumps(_Payload(marker)))
    state = blank_state()
    Saver().restore(state, victim.parent, step=2)
    load(victim)
    assert step_of(state) == 2
    assert not marker.exists(), "the pickle payload ran"


@pytest.mark.parametrize("length", [2**63 - 1, 2**40, 200 * 1024 * 1024])
def test_huge_header_length_allocates_nothing(length, victim) -> None:
    with open(victim / DATA, "r+b") as f:
        f.write(struct.pack("<Q", length))
    tracemalloc.start()
    try:
        _every_reader_refuses(victim)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes traced while refusing a tiny file"


def _set(name: str, field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(header: dict[str, Any]) -> None:
        header[name][field] = value

    return change


def _overlap(header: dict[str, Any]) -> None:
    begin = header["weight"]["data_offsets"][0]
    bias_begin, bias_end = header["bias"]["data_offsets"]
    header["bias"]["data_offsets"] = [begin, begin + bias_end - bias_begin]


FORGED_HEADERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "offsets_past_the_file": _set("weight", "data_offsets", [0, 10**12]),
    "offsets_reversed": _set("weight", "data_offsets", [512, 0]),
    "offsets_negative": _set("weight", "data_offsets", [-8, 504]),
    "offsets_overlapping": _overlap,
    "shape_overflows_int64": _set("weight", "shape", [2**62, 2**62, 16]),
    "shape_times_dtype_mismatch": _set("weight", "shape", [16, 9]),
    "shape_negative": _set("weight", "shape", [-16, -8]),
    "unknown_dtype": _set("weight", "dtype", "F128"),
    "dtype_object": _set("weight", "dtype", "O"),
    "entry_not_an_object": lambda h: h.__setitem__("weight", [1, 2]),
    "metadata_not_strings": lambda h: h.__setitem__("__metadata__", {"a": 1}),
}


@pytest.mark.parametrize("forgery", sorted(FORGED_HEADERS))
def test_forged_safetensors_header_is_refused(forgery, victim) -> None:
    rewrite_header(victim, FORGED_HEADERS[forgery])
    tracemalloc.start()
    try:
        _every_reader_refuses(victim, match=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024


def test_header_and_manifest_forged_to_agree_on_a_huge_tensor(victim) -> None:
    """Both files claim a 2**62-element tensor: refused before any allocation."""

    def huge_record(body: dict[str, Any]) -> None:
        for record in body["tensors"]:
            if record["name"] == "weight":
                record["shape"] = [2**62, 2**62, 16]

    rewrite_header(victim, _set("weight", "shape", [2**62, 2**62, 16]))
    rewrite_manifest(victim, huge_record)
    _every_reader_refuses(victim)


def _record_field(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        body["tensors"][0][field] = value

    return change


def _file_outside(body: dict[str, Any]) -> None:
    outside = "../ckpt-000000000001/" + DATA
    body["files"] = {outside: body["files"][DATA]}
    for record in body["tensors"]:
        record["file"] = outside


FORGED_MANIFESTS: dict[str, Callable[[dict[str, Any]], None]] = {
    "file_outside_the_checkpoint": _file_outside,
    "record_names_unlisted_file": _record_field("file", "/etc/passwd"),
    "record_unknown_dtype": _record_field("dtype", "Q99"),
    "record_offsets_out_of_range": _record_field("offsets", [0, 2**60]),
    "record_shape_overflow": _record_field("shape", [2**63, 2**63]),
    "record_crc_not_int": _record_field("crc32c", "0"),
    "newer_format_version": lambda b: b.__setitem__("format_version", 999),
    "negative_step": lambda b: b.__setitem__("step", -1),
    "tree_deeper_than_any_state": lambda b: b.__setitem__("tree", _deep(300)),
    "tree_unknown_node_type": lambda b: b.__setitem__("tree", {"type": "pickle", "value": "x"}),
    "tree_tensor_without_name": lambda b: b.__setitem__(
        "tree", {"type": "dict", "items": [["weight", {"type": "tensor"}]]}
    ),
    "tree_tensor_not_in_file": lambda b: b.__setitem__(
        "tree", {"type": "dict", "items": [["weight", {"type": "tensor", "name": "../../x"}]]}
    ),
    "tree_is_a_list": lambda b: b.__setitem__("tree", [1, 2, 3]),
    "tree_torch_dtype_names_a_function": lambda b: b.__setitem__(
        "tree", {"type": "dict", "items": [["weight", {"type": "torch_dtype", "value": "load"}]]}
    ),
}


def _deep(depth: int) -> Any:
    node: Any = {"type": "value", "value": 0}
    for _ in range(depth):
        node = {"type": "list", "items": [node]}
    return node


@pytest.mark.parametrize("forgery", sorted(FORGED_MANIFESTS))
def test_forged_manifest_is_refused(forgery, victim) -> None:
    rewrite_manifest(victim, FORGED_MANIFESTS[forgery])
    readers = {
        "load": lambda: load(victim),
        "restore": lambda: Saver().restore(blank_state(), victim.parent, step=2),
    }
    for reader, read in readers.items():
        with pytest.raises(CheckpointError) as caught:
            read()
        assert isinstance(caught.value, TYPED), f"{reader}: {caught.value!r}"
        assert victim.name in str(caught.value), f"{reader}: {caught.value}"
    assert not (victim.parent.parent / "x").exists()


@pytest.mark.parametrize("name", [DATA, MANIFEST])
def test_symlinked_file_in_a_checkpoint_is_refused(name, victim, tmp_path) -> None:
    outside = tmp_path / f"outside-{name}"
    os.rename(victim / name, outside)  # the very same valid bytes, reached through a link
    os.symlink(outside, victim / name)
    _every_reader_refuses(victim, match="symlink")


def test_symlinked_checkpoint_directory_is_not_listed(victim, tmp_path) -> None:
    real = tmp_path / "real"
    os.rename(victim, real)
    os.symlink(real, victim)
    assert [i.step for i in list_checkpoints(victim.parent)] == [1]


def test_dangerous_looking_state_keys_are_opaque_and_create_no_paths(tmp_path: Path) -> None:
    state = {"../../evil": np.ones(2), "a/../../b": {"/etc/passwd": np.zeros(1)}}
    with Saver() as saver:
        info = saver.save(state, tmp_path / "ckpts", step=1)
    assert sorted(p.name for p in info.path.iterdir()) == [MANIFEST, DATA]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpts"]
    loaded = load(info.path)
    assert loaded["../../evil"].tolist() == [1.0, 1.0]
    assert loaded["a/../../b"]["/etc/passwd"].tolist() == [0.0]
