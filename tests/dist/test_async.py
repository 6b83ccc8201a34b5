"""``save_sharded_async`` on a real 2-rank gloo job: one launch runs every scenario (save
while training mutates the state, two saves in a row, an I/O error on one rank); the test
process checks what each rank saw and what is on disk, loading with ``trainhooks.load``."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch.multiprocessing as mp

import trainhooks
from _support import dist_async
from _support import dist_workers as w
from _support.reliability import leftovers



@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("async")
    mp.spawn(dist_async.async_saves, args=(2, w.free_port(), str(root)), nprocs=2, join=True)
    results = {r: json.loads((root / f"result-{r}.json").read_text()) for r in range(2)}
    return {"root": root, "results": results}


def test_checkpoint_holds_the_state_at_the_call_not_the_later_training(
    launched: dict[str, Any],
) -> None:
    root: Path = launched["root"]
    for rank in range(2):
        first = launched["results"][rank]["first"]
        assert first["step"] == 2 and first["done"], first
    paths = {info.step: info.path for info in trainhooks.list_checkpoints(root / "ckpt")}
    for step in (2, 3):
        loaded = trainhooks.load(paths[step])
        expected = dict(np.load(root / f"expected-{step}.npz"))
        w.assert_same(w.flat_arrays(loaded), expected, f"step {step}")


def test_consecutive_saves_commit_in_order(launched: dict[str, Any]) -> None:
    for rank in range(2):
        seen = launched["results"][rank]
        assert seen["third_done_when_fourth_returned"] is True
        third, fourth = seen["in_order"]
        assert third < fourth, seen
    listed = trainhooks.list_checkpoints(launched["root"] / "ckpt")
    assert [info.step for info in listed] == [2, 3, 4]


def test_no_pickle_on_disk_and_every_checkpoint_verifies(launched: dict[str, Any]) -> None:
    for info in trainhooks.list_checkpoints(launched["root"] / "ckpt"):
        names = sorted(p.name for p in info.path.iterdir())
        assert names == [
            "manifest.json",
            "shard-00000-of-00002.safetensors",
            "shard-00001-of-00002.safetensors",
        ]
        json.loads((info.path / "manifest.json").read_text())
        trainhooks.verify_checkpoint(info.path)


def test_error_on_one_rank_is_the_same_typed_error_on_both(launched: dict[str, Any]) -> None:
    failures = [launched["results"][rank]["failed"] for rank in range(2)]
    for failure in failures:
        assert failure is not None
        assert failure["error"] == "CheckpointWriteError", failure
        assert "injected I/O error" in failure["message"] and failure["step"] == 5
    assert failures[0] == failures[1]
    directory = launched["root"] / "ckpt"
    assert leftovers(directory) == set()
    assert trainhooks.list_checkpoints(directory)[-1].step == 4


def test_one_process_without_a_process_group(tmp_path: Path) -> None:
    # No torch.distributed job: the same call saves this process's state in the background.
    import torch

    from trainhooks.distributed import save_sharded_async, wait_for_sharded_saves

    weights = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    future = save_sharded_async({"w": weights, "meta": {"lr": 0.5}}, tmp_path, 7)
    weights.add_(100.0)  # after the call: not in the checkpoint
    wait_for_sharded_saves()
    info = future.result()
    assert info.step == 7
    loaded = trainhooks.load(info.path)
    assert loaded["w"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert loaded["meta"] == {"lr": 0.5}


def test_bad_step_is_refused_at_the_call(tmp_path: Path) -> None:
    from trainhooks.distributed import save_sharded_async

    with pytest.raises(ValueError, match="step must be a non-negative int"):
        save_sharded_async({"x": 1}, tmp_path, -1)
    with pytest.raises(ValueError, match="basename"):
        save_sharded_async({"x": 1}, tmp_path, 1, basename="a/b")
    assert trainhooks.list_checkpoints(tmp_path) == []
