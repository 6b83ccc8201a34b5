"""Sharded (multi-rank) checkpoints in object storage: a real 2-rank gloo job saving to the
moto S3 server (``save_sharded`` / ``load_sharded`` and ``MonitoredTrainingSession`` with
``checkpoint_dir="s3://..."``), then this process as the one-process end (a 2 -> 1 read
through ``trainhooks.load``, ``load_sharded`` without a process group, the CLI).

One launch runs every scenario (``_support/dist_remote.py``); the ranks inherit the
server's endpoint and credentials through the environment.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import trainhooks
from _support import dist_remote
from _support import dist_workers as w
from trainhooks._cli import main as cli_main
from trainhooks.distributed import load_sharded



@pytest.fixture(scope="module")
def launched(
    s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    import boto3

    bucket = f"th-dist-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    root = tmp_path_factory.mktemp("dist-remote")
    url = f"s3://{bucket}"
    mp.spawn(dist_remote.two_ranks, args=(2, w.free_port(), str(root), url), nprocs=2, join=True)
    yield {"root": root, "url": url, "bucket": bucket, "endpoint": s3_endpoint}


def _results(launched: dict[str, Any], name: str) -> list[dict[str, Any]]:
    out = launched["root"] / "results"
    return [json.loads((out / f"{name}-{rank}.json").read_text()) for rank in (0, 1)]


def _objects(launched: dict[str, Any], prefix: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=launched["endpoint"])
    listed = client.list_objects_v2(Bucket=launched["bucket"], Prefix=prefix)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def test_every_rank_uploads_its_shard_and_rank_0_commits_the_manifest(
    launched: dict[str, Any],
) -> None:
    results = _results(launched, "sharded")
    assert results[0]["paths"] == results[1]["paths"]  # the same CheckpointInfo on both
    assert results[0]["paths"][1] == f"{launched['url']}/sharded/ckpt-000000000002"
    assert results[0]["sequences"] == [1, 2]
    keys = _objects(launched, "sharded/ckpt-000000000002/")
    names = [key.rsplit("/", 1)[1] for key in keys]
    assert names[0] == "manifest.json" and len(names) == 3, names
    assert names[1].startswith("shard-00000-of-00002-")
    assert names[2].startswith("shard-00001-of-00002-")
    listed = trainhooks.list_checkpoints(f"{launched['url']}/sharded")
    assert [info.step for info in listed] == [1, 2, 4]
    assert listed[0].metadata == {"kind": "fsdp"}


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")
def test_two_rank_checkpoint_reads_in_one_process_bit_exact(launched: dict[str, Any]) -> None:
    expected = dict(np.load(launched["root"] / "sharded-expected.npz"))
    path = f"{launched['url']}/sharded/ckpt-000000000002"
    loaded = trainhooks.load(path)  # 2 -> 1, no torch: full arrays assembled from chunks
    w.assert_same(w.flat_arrays(loaded), expected, "trainhooks.load")
    # load_sharded without a process group: DCP's reader reshards onto one process
    model = w.make_model(seed=9)
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    w.train(model, optim, 1)
    target = w.state(model, optim)
    load_sharded(target, path)
    w.assert_same(w.flat_arrays(w.full(target)), expected, "load_sharded, 2 -> 1")


def test_cli_shows_and_verifies_the_sharded_checkpoint(
    launched: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = f"{launched['url']}/sharded/ckpt-000000000002"
    capsys.readouterr()
    assert cli_main(["verify", f"{launched['url']}/sharded"]) == 0
    out = capsys.readouterr().out
    assert "ckpt-000000000002" in out and "ckpt-000000000001" in out
    assert cli_main(["show", path]) == 0
    assert "model" in capsys.readouterr().out


def test_a_failed_upload_on_one_rank_commits_nothing_on_either(
    launched: dict[str, Any],
) -> None:
    failures = [result["failed"] for result in _results(launched, "sharded")]
    assert failures[0] == failures[1]  # the same typed error on every rank
    assert failures[0]["error"] == "CheckpointWriteError", failures[0]
    assert failures[0]["step"] == 3 and "injected I/O error" in failures[0]["message"]
    assert _objects(launched, "sharded/ckpt-000000000003") == []  # no manifest, no shard
    steps = [info.step for info in trainhooks.list_checkpoints(f"{launched['url']}/sharded")]
    assert steps == [1, 2, 4]  # 3 failed; the next save (in the background) committed


def test_background_save_commits_to_the_url(launched: dict[str, Any]) -> None:
    paths = {result["background"] for result in _results(launched, "sharded")}
    assert paths == {f"{launched['url']}/sharded/ckpt-000000000004"}
    trainhooks.verify_checkpoint(paths.pop())


def test_rank_0_storage_options_reach_every_rank(launched: dict[str, Any]) -> None:
    # rank 1's environment named a closed port: its shard went up with rank 0's options
    loaded = trainhooks.load(f"{launched['url']}/options/ckpt-000000000001")
    assert sorted(loaded) == ["w"] and loaded["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
    names = [key.rsplit("/", 1)[1] for key in _objects(launched, "options/ckpt-000000000001/")]
    assert len(names) == 3 and names[2].startswith("shard-00001-of-00002-"), names


def test_session_saves_to_a_url_and_resumes_bit_exact(launched: dict[str, Any]) -> None:
    for result in _results(launched, "session"):
        straight, resumed = result["straight"], result["resumed"]
        assert straight["step"] == resumed["step"] == 8
        assert resumed["restored"] == 4  # the crash came at step 6
        assert resumed["digest"] == straight["digest"]
    steps = [info.step for info in trainhooks.list_checkpoints(f"{launched['url']}/straight")]
    assert steps == [0, 4, 8]


def test_session_with_background_saves_commits_every_save_to_the_url(
    launched: dict[str, Any],
) -> None:
    for result in _results(launched, "session"):
        assert result["background"] == result["straight"]  # same steps, same final state
    run = f"{launched['url']}/background"
    assert [info.step for info in trainhooks.list_checkpoints(run)] == [0, 4, 8]
    straight = trainhooks.load(f"{launched['url']}/straight/ckpt-000000000008")
    _assert_same_tree(trainhooks.load(f"{run}/ckpt-000000000008"), straight)


def _assert_same_tree(got: Any, want: Any, where: str = "") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            _assert_same_tree(got[key], want[key], f"{where}/{key}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for index, (g, w_) in enumerate(zip(got, want)):
            _assert_same_tree(g, w_, f"{where}/{index}")
    else:
        assert np.array_equal(np.asarray(got), np.asarray(want)), where


def test_corrupt_shard_object_every_rank_falls_back_to_the_previous_checkpoint(
    launched: dict[str, Any],
) -> None:
    ranks = _results(launched, "session")
    for result in ranks:
        fallback = result["fallback"]
        assert fallback["restored"] == 4  # step 8's shard failed its crc32c on some rank
        assert fallback["digest"] == result["straight"]["digest"]  # and trained on to 8
    # the re-save of step 8 replaced the damaged copy: it verifies again
    info = trainhooks.verify_checkpoint(f"{launched['url']}/resumed/ckpt-000000000008")
    assert info.step == 8
