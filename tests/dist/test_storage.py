"""DCP's save and load through this project's format, on real gloo process groups.

Two launches (2 ranks, then 4) share every multi-process check; the test process itself is
the one-process end (a 1-rank save, a 4 -> 1 load, ``trainhooks.load``, ``verify``).
"""

from __future__ import annotations

import datetime
import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from safetensors.numpy import load_file

import trainhooks
from _support import dist_workers as w
from trainhooks import CheckpointCorruptError
from trainhooks.distributed import ShardedReader, ShardedWriter, load_sharded, save_sharded



def _spawn(function: object, world: int, root: Path) -> None:
    mp.spawn(function, args=(world, w.free_port(), str(root)), nprocs=world, join=True)


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-process save, then the 2-rank launch, then the 4-rank launch."""
    root = tmp_path_factory.mktemp("dist")
    model = w.make_model(seed=11)
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    w.train(model, optim, 3)
    one = w.state(model, optim)
    dcp.save(one, storage_writer=ShardedWriter(root / "one", 5))
    np.savez(root / "one-expected.npz", **w.flat_arrays(w.full(one)))
    _spawn(w.save_and_reload_2, 2, root)
    _spawn(w.reshard_to_4, 4, root)
    return root


def test_ranks_save_reload_and_reshard_bit_exact(launched: Path) -> None:
    # The checks ran in the ranks (save -> load 2 ranks, 1 -> 2, 2 -> 4); here: the files.
    for name, step in [("rep", 2), ("fsdp", 2), ("fsdp4", 4), ("one", 5)]:
        assert [i.step for i in trainhooks.list_checkpoints(launched / name)] == [step]
    shards = sorted(p.name for p in (launched / "fsdp4" / "ckpt-000000000004").iterdir())
    assert shards == [
        "manifest.json",
        *(f"shard-{r:05d}-of-00004.safetensors" for r in range(4)),
    ]


def test_four_rank_checkpoint_loads_into_one_process(launched: Path) -> None:
    model = w.make_model(seed=2)
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    w.train(model, optim, 1)
    target = w.state(model, optim)
    dcp.load(target, storage_reader=ShardedReader(launched / "fsdp4" / "ckpt-000000000004"))
    expected = dict(np.load(launched / "fsdp-expected.npz"))
    w.assert_same(w.flat_arrays(w.full(target)), expected, "4 -> 1")


def test_trainhooks_load_gives_full_tensors_and_verify_passes(launched: Path) -> None:
    path = launched / "fsdp" / "ckpt-000000000002"
    loaded = trainhooks.load(path)
    expected = dict(np.load(launched / "fsdp-expected.npz"))
    w.assert_same(w.flat_arrays(loaded), expected, "trainhooks.load")
    assert loaded["optim"]["param_groups"][0]["betas"] == (0.9, 0.999)
    info = trainhooks.verify_checkpoint(path)
    assert info.step == 2


def test_every_file_is_safetensors_or_json_no_pickle(launched: Path) -> None:
    for path in launched.rglob("ckpt-*/*"):
        if path.name == "manifest.json":
            json.loads(path.read_bytes())
        else:
            assert path.suffix == ".safetensors", path
            load_file(path)  # the safetensors library reads every shard as it is


def test_corrupt_shard_is_a_typed_error(launched: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ckpt-000000000002"
    shutil.copytree(launched / "fsdp" / "ckpt-000000000002", copy)
    shard = copy / "shard-00001-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x10
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError, match="shard-00001-of-00002"):
        trainhooks.verify_checkpoint(copy)
    with pytest.raises(CheckpointCorruptError):
        trainhooks.load(copy)
    model = w.make_model()
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    w.train(model, optim, 1)
    with pytest.raises(CheckpointCorruptError):
        load_sharded(w.state(model, optim), copy)


def test_retention_keeps_the_newest_max_to_keep(launched: Path, tmp_path: Path) -> None:
    # Four 2-rank saves with max_to_keep=2: rank 0 deleted steps 1 and 2 once 3 and 4 were
    # durable; the plan is in the manifest, so a new writer continues it (here: one process).
    directory = launched / "keep"
    assert [i.step for i in trainhooks.list_checkpoints(directory)] == [3, 4]
    manifest = json.loads((directory / "ckpt-000000000004" / "manifest.json").read_bytes())
    assert [step for step, _ in manifest["retention"]["managed"]] == [3, 4]
    copy = tmp_path / "keep"
    shutil.copytree(directory, copy)
    model = w.make_model()
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    save_sharded(w.state(model, optim), copy, 5, max_to_keep=2)
    assert [i.step for i in trainhooks.list_checkpoints(copy)] == [4, 5]
    assert trainhooks.checkpoint_info(copy / "ckpt-000000000005").sequence == 5
    save_sharded(w.state(model, optim), copy, 6)  # max_to_keep=None keeps every checkpoint
    assert [i.step for i in trainhooks.list_checkpoints(copy)] == [4, 5, 6]


@pytest.mark.parametrize("timeout", [0, -1.0, datetime.timedelta(0)])
def test_timeout_must_be_positive(tmp_path: Path, timeout: object) -> None:
    model = w.make_model()
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        save_sharded(w.state(model, optim), tmp_path, 1, timeout=timeout)  # type: ignore[arg-type]
    assert trainhooks.list_checkpoints(tmp_path) == []
