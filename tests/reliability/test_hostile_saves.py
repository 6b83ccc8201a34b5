"""A save that returns must be loadable: states at each format limit and one past it.

The writer and every reader share one definition of the limits (``_store/_limits.py``). At
a limit a save succeeds and every reader reads it back; one past it the save is refused
with a ``CheckpointFormatError`` naming the offending path and the limit, before anything
is written. Inputs that no JSON can hold (mixed key types, lone surrogates, nesting deeper
than Python's recursion) are refused the same way instead of escaping as ``TypeError``,
``UnicodeEncodeError`` or ``RecursionError``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trainhooks
from _support.reliability import report_figure
from trainhooks import CheckpointFormatError, Saver
from trainhooks._store._commit import TensorSource, commit_checkpoint
from trainhooks._store._limits import (
    MAX_MANIFEST_BYTES,
    MAX_NAME_LENGTH,
    MAX_RANK,
    MAX_SEQUENCE,
    MAX_TENSORS,
    MAX_TREE_DEPTH,
    json_depth,
)
from trainhooks._store._reader import CheckpointReader

COUNTS = {"limits_at": 0, "limits_past": 0, "inputs": 0}


@pytest.fixture(autouse=True, scope="module")
def _figures() -> Any:
    yield
    report_figure(
        "hostile_saves",
        at_limit_saved_and_loaded=COUNTS["limits_at"],
        past_limit_refused=COUNTS["limits_past"],
        unstorable_inputs_refused=COUNTS["inputs"],
    )


# -- building states of an exact size -----------------------------------------------------


def nested_to_depth(depth: int, leaf: Any = 1, wrap: type = list) -> dict[str, Any]:
    """A state whose checkpoint tree is exactly ``depth`` JSON levels deep.

    A dict level costs 3 JSON levels (its node, its ``items`` list, the ``[key, node]``
    pair), a list or tuple level 2 (node, ``items``); every leaf (scalar, tensor, empty
    container) reaches one level below its node; the root node is level 1.
    """
    lists = 0
    while (depth - 2 - 2 * lists) % 3:
        lists += 1
    dicts = (depth - 2 - 2 * lists) // 3
    node: Any = leaf
    for _ in range(lists):
        node = wrap([node])
    for _ in range(dicts - 1):
        node = {"k": node}
    return {"k": node}


def nested_lists(levels: int) -> list[Any]:
    node: list[Any] = []
    for _ in range(levels - 1):
        node = [node]
    return node


def tree_depth_of(path: Path) -> int:
    with CheckpointReader(path) as reader:
        return json_depth(reader.manifest.tree, limit=10**6)


def assert_saves_and_loads(tmp_path: Path, state: dict[str, Any], **kw: Any) -> Path:
    directory = tmp_path / "ckpts"
    with Saver() as saver:
        info = saver.save(state, directory, step=1, **kw)
    trainhooks.verify_checkpoint(info.path)
    trainhooks.load(info.path)
    assert trainhooks.latest_checkpoint(directory) == info
    COUNTS["limits_at"] += 1
    return info.path


def assert_refused(
    tmp_path: Path, state: Any, *needles: str, counter: str = "limits_past", **kw: Any
) -> CheckpointFormatError:
    """The save raises ``CheckpointFormatError`` whose message holds every needle, and
    writes nothing at all: the never-used directory is not even created."""
    directory = tmp_path / "refused"
    with Saver() as saver, pytest.raises(CheckpointFormatError) as caught:
        saver.save(state, directory, step=1, **kw)
    message = str(caught.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert not directory.exists(), sorted(os.listdir(directory))
    COUNTS[counter] += 1
    return caught.value


# -- each limit: at it, saved and loaded; one past it, refused ------------------------------


@pytest.mark.parametrize("nesting", ["flat", "nested"])
def test_tensor_path_at_the_name_limit_saves_and_one_more_character_is_refused(
    tmp_path: Path, nesting: str
) -> None:
    def state(length: int) -> dict[str, Any]:
        if nesting == "flat":
            return {"a" * length: np.zeros(2, np.float32)}
        head = length // 2
        return {"a" * head: {"b" * (length - head - 1): np.zeros(2, np.float32)}}

    path = assert_saves_and_loads(tmp_path, state(MAX_NAME_LENGTH))
    with CheckpointReader(path) as reader:
        assert len(reader.manifest.tensors[0].name) == MAX_NAME_LENGTH
    assert_refused(tmp_path, state(MAX_NAME_LENGTH + 1), f"{MAX_NAME_LENGTH:,}", "'aaaa")


def test_a_deduplicated_tensor_name_counts_its_suffix(tmp_path: Path) -> None:
    """``{'a': {'b': x}, 'a/b': y}`` stores ``a/b`` and ``a/b#2``: the suffix must fit too."""

    def state(length: int) -> dict[str, Any]:
        head = "a" * (length - 4)  # head + "/b" + "#2"
        return {head: {"b": np.zeros(1)}, f"{head}/b": np.ones(1)}

    assert_saves_and_loads(tmp_path, state(MAX_NAME_LENGTH))
    assert_refused(tmp_path, state(MAX_NAME_LENGTH + 1), f"{MAX_NAME_LENGTH:,}", "#2")


def test_tree_at_the_depth_limit_saves_and_one_level_more_is_refused(tmp_path: Path) -> None:
    path = assert_saves_and_loads(tmp_path, nested_to_depth(MAX_TREE_DEPTH))
    assert tree_depth_of(path) == MAX_TREE_DEPTH
    assert_refused(tmp_path, nested_to_depth(MAX_TREE_DEPTH + 1), f"{MAX_TREE_DEPTH}", "['k']")


LEAVES: dict[str, Any] = {
    "scalar": 1,
    "none": None,
    "string": "s",
    "empty_list": [],
    "empty_dict": {},
    "tensor": np.zeros(1),
}


@pytest.mark.parametrize("wrap", [list, tuple])
@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_every_leaf_and_container_costs_what_the_reader_counts(
    tmp_path: Path, leaf: str, wrap: type
) -> None:
    for depth in (MAX_TREE_DEPTH - 1, MAX_TREE_DEPTH):
        path = assert_saves_and_loads(
            tmp_path / str(depth), nested_to_depth(depth, LEAVES[leaf], wrap)
        )
        assert tree_depth_of(path) == depth
    past = nested_to_depth(MAX_TREE_DEPTH + 1, LEAVES[leaf], wrap)
    assert_refused(tmp_path, past, str(MAX_TREE_DEPTH))


def test_rank_at_the_limit_saves_and_one_more_dimension_is_refused(tmp_path: Path) -> None:
    import torch

    assert_saves_and_loads(tmp_path, {"t": torch.zeros((1,) * MAX_RANK)})
    assert_refused(tmp_path, {"t": torch.zeros((1,) * (MAX_RANK + 1))}, "['t']", str(MAX_RANK))


def test_tensor_count_at_the_limit_saves_and_one_more_is_refused(tmp_path: Path) -> None:
    empty = np.zeros(0, np.uint8)
    with Saver() as saver:  # one reader (load) only: each pass over 65,536 tensors costs
        info = saver.save({"t": [empty] * MAX_TENSORS}, tmp_path / "ckpts", step=1)
    assert len(trainhooks.load(info.path)["t"]) == MAX_TENSORS
    COUNTS["limits_at"] += 1
    past = {"t": [empty] * MAX_TENSORS, "u": empty}
    assert_refused(tmp_path, past, f"{MAX_TENSORS:,}", "['u']")


def _manifest_of(directory: Path, padding: int, step: int) -> Any:
    """Commit a checkpoint whose manifest carries ``padding`` bytes of metadata."""
    source = TensorSource("w", "F32", (2,), memoryview(np.zeros(2, np.float32)).cast("B"))
    tree = {"type": "dict", "items": [["w", {"type": "tensor", "name": "w", "kind": "numpy"}]]}
    return commit_checkpoint(
        directory, "ckpt", step, [source], tree, {"pad": "x" * padding}, when=1.5
    )


def test_manifest_at_the_size_cap_commits_and_one_byte_more_is_refused(tmp_path: Path) -> None:
    """The writer counts every checksum at its widest (10 digits), so what it admits is
    never larger than what the reader accepts; its estimate reaches the cap exactly."""
    directory = tmp_path / "ckpts"
    directory.mkdir()
    probe = _manifest_of(directory, 0, 1).path / "manifest.json"
    body = json.loads(probe.read_bytes())
    crcs = [
        body["tensors"][0]["crc32c"],
        body["files"]["tensors.safetensors"]["header_crc32c"],
        body["manifest_crc32c"],
    ]
    estimate = probe.stat().st_size + sum(10 - len(str(crc)) for crc in crcs)
    padding = MAX_MANIFEST_BYTES - estimate
    at_limit = _manifest_of(directory, padding, 2)
    assert (at_limit.path / "manifest.json").stat().st_size <= MAX_MANIFEST_BYTES
    trainhooks.verify_checkpoint(at_limit.path)
    COUNTS["limits_at"] += 1
    before = sorted(os.listdir(directory))
    with pytest.raises(CheckpointFormatError, match=f"{MAX_MANIFEST_BYTES:,}"):
        _manifest_of(directory, padding + 1, 3)
    assert sorted(os.listdir(directory)) == before, "a refused save wrote something"
    COUNTS["limits_past"] += 1


def test_shards_past_the_tensor_count_together_are_refused_before_the_commit(
    tmp_path: Path,
) -> None:
    """Each process's shard fits; all of them together are one tensor too many."""
    from trainhooks._store._sharded import commit_staged, shard_file_name, stage, write_shard

    empty = memoryview(np.zeros(0, np.uint8)).cast("B")
    half = MAX_TENSORS // 2
    staging = stage(tmp_path, "ckpt", 1)
    shards = [
        write_shard(
            staging,
            shard_file_name(rank, 2),
            1,
            [TensorSource(f"t{rank}.{i}", "U8", (0,), empty) for i in range(half + rank)],
        )
        for rank in range(2)
    ]
    tree = {"type": "value", "value": 0}
    with pytest.raises(CheckpointFormatError, match=f"{MAX_TENSORS:,}"):
        commit_staged(tmp_path, "ckpt", 1, staging, shards, tree, {})
    assert sorted(os.listdir(tmp_path)) == [], "a refused commit left its staging behind"
    COUNTS["limits_past"] += 1


def test_commit_number_at_the_limit_commits_and_one_more_is_refused(tmp_path: Path) -> None:
    source = TensorSource("w", "F32", (2,), memoryview(np.zeros(2, np.float32)).cast("B"))
    tree = {"type": "dict", "items": [["w", {"type": "tensor", "name": "w", "kind": "numpy"}]]}
    directory = tmp_path / "ckpts"
    directory.mkdir()
    info = commit_checkpoint(directory, "ckpt", 1, [source], tree, {}, sequence=MAX_SEQUENCE)
    assert trainhooks.latest_checkpoint(directory) == info and info.sequence == MAX_SEQUENCE
    COUNTS["limits_at"] += 1
    with pytest.raises(CheckpointFormatError, match=str(MAX_SEQUENCE)):
        commit_checkpoint(directory, "ckpt", 2, [source], tree, {}, sequence=MAX_SEQUENCE + 1)
    assert sorted(os.listdir(directory)) == ["ckpt-000000000001"]
    COUNTS["limits_past"] += 1


def test_metadata_past_the_manifest_cap_is_refused_through_the_saver(tmp_path: Path) -> None:
    with Saver() as saver:
        saver.save({"w": np.zeros(2)}, tmp_path, step=1)
        before = sorted(os.listdir(tmp_path))
        with pytest.raises(CheckpointFormatError, match=f"{MAX_MANIFEST_BYTES:,}"):
            saver.save(
                {"w": np.zeros(2)}, tmp_path, step=2, metadata={"x": "y" * MAX_MANIFEST_BYTES}
            )
    assert sorted(os.listdir(tmp_path)) == before
    COUNTS["limits_past"] += 1


def test_metadata_at_the_depth_limit_saves_and_one_level_more_is_refused(tmp_path: Path) -> None:
    def metadata(depth: int) -> Any:
        node: Any = 1
        for _ in range(depth - 1):  # a scalar is one level; each list adds one
            node = [node]
        return node

    path = assert_saves_and_loads(tmp_path, {"w": np.zeros(1)}, metadata={"m": metadata(199)})
    with CheckpointReader(path) as reader:
        assert json_depth(reader.manifest.metadata, limit=10**6) == MAX_TREE_DEPTH
    assert_refused(
        tmp_path,
        {"w": np.zeros(1)},
        "metadata['m']",
        str(MAX_TREE_DEPTH),
        metadata={"m": metadata(200)},
    )


# -- inputs no JSON can hold ---------------------------------------------------------------


def _deep_dict(levels: int) -> dict[str, Any]:
    node: Any = np.zeros(1)
    for _ in range(levels):
        node = {"a": node}
    return node


class _Recursive:
    """An object whose state_dict holds another of its kind, without end."""

    def state_dict(self) -> dict[str, Any]:
        return {"inner": _Recursive()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


UNSTORABLE: dict[str, tuple[dict[str, Any], dict[str, Any] | None, tuple[str, ...]]] = {
    "metadata_mixed_key_types": ({"w": np.zeros(1)}, {1: "a", "b": 2}, ("metadata", "1")),
    "metadata_int_key_nested": ({"w": np.zeros(1)}, {"a": {3: 1}}, ("metadata['a']", "3")),
    "metadata_400_nested_dicts": ({"w": np.zeros(1)}, _deep_dict(400), ("metadata",)),
    "metadata_5000_nested_lists": (
        {"w": np.zeros(1)},
        {"m": nested_lists(5000)},
        ("metadata['m']",),
    ),
    "metadata_nan": ({"w": np.zeros(1)}, {"loss": float("nan")}, ("metadata['loss']",)),
    "metadata_numpy_scalar": ({"w": np.zeros(1)}, {"lr": np.float32(1)}, ("metadata['lr']",)),
    "metadata_bytes": ({"w": np.zeros(1)}, {"b": b"x"}, ("metadata['b']",)),
    "tensor_key_lone_surrogate": ({"\ud800": np.zeros(1)}, None, ("'\\ud800'", "UTF-8")),
    "nested_tensor_key_lone_surrogate": (
        {"a": {"x\udfff": np.zeros(1)}},
        None,
        ("['a']", "UTF-8"),
    ),
    "state_400_nested_dicts": (_deep_dict(400), None, ("state['a']['a']", str(MAX_TREE_DEPTH))),
    "state_5000_nested_lists": (
        {"m": nested_lists(5000)},
        None,
        ("state['m'][0]",),
    ),
    "state_dict_without_end": ({"obj": _Recursive()}, None, ("state['obj']['inner']",)),
}


@pytest.mark.parametrize("case", sorted(UNSTORABLE))
def test_unstorable_input_is_a_format_error_naming_its_path(tmp_path: Path, case: str) -> None:
    state, metadata, needles = UNSTORABLE[case]
    assert_refused(tmp_path, state, *needles, counter="inputs", metadata=metadata)


STORABLE: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {
    "scalar_under_a_lone_surrogate_key": ({"\ud800": 1, "w": np.zeros(1)}, None),
    "metadata_lone_surrogate_value": ({"w": np.zeros(1)}, {"tag": "\ud800"}),
    "metadata_empty_key": ({"w": np.zeros(1)}, {"": 1}),
}


@pytest.mark.parametrize("case", sorted(STORABLE))
def test_odd_but_storable_input_round_trips(tmp_path: Path, case: str) -> None:
    state, metadata = STORABLE[case]
    path = assert_saves_and_loads(tmp_path, state, metadata=metadata)
    loaded = trainhooks.load(path)
    assert sorted(loaded, key=repr) == sorted(state, key=repr)
    assert trainhooks.checkpoint_info(path).metadata == (metadata or {})
