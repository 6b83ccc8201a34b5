"""The storage side of a sharded save into object storage, in one process (no torch, no
process group): shards uploaded as "ranks" would, then the coordinator's commit, against the
moto server. ``tests/dist/test_remote_sharded.py`` runs the same through DCP on 2 ranks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import trainhooks
from trainhooks import CheckpointWriteError
from trainhooks._state._encode import encode_state
from trainhooks._store._remote._sharded import ShardedUpload, upload_shard
from trainhooks._store._writer import retention_policy

STATE = {"a": np.arange(6, dtype=np.float32), "b": np.ones((2, 2), np.int64), "n": 3}


def _upload(url: str, step: int, *, lock: bool = True, max_to_keep: int | None = None) -> Any:
    """Two "ranks" each upload one tensor of ``STATE``; returns the upload and shards."""
    tree, tensors = encode_state(STATE)
    upload = ShardedUpload(
        url, "ckpt", step, retention_policy(max_to_keep, 10000.0), None, lock=lock
    )
    names = upload.shard_names(len(tensors))
    shards = [
        upload_shard(upload.prefix_url, name, step, [tensor], None)
        for name, tensor in zip(names, tensors, strict=True)
    ]
    return upload, shards, tree


def _keys(s3: Any, url: str) -> list[str]:
    return sorted(path.rsplit("/", 2)[-2] + "/" + path.rsplit("/", 1)[1] for path in s3.find(url))


def test_shards_committed_by_one_manifest_load_as_one_checkpoint(s3_url: str, s3: Any) -> None:
    for step in (1, 2, 3):
        upload, shards, tree = _upload(s3_url, step, max_to_keep=2)
        try:
            info = upload.commit(shards, tree, {"m": step}, None)
        finally:
            upload.close()
        assert info.step == step and info.sequence == step and str(info.path).startswith("s3://")
    assert [i.step for i in trainhooks.list_checkpoints(s3_url)] == [2, 3]  # max_to_keep=2
    loaded = trainhooks.load(f"{s3_url}/ckpt-000000000003")
    assert loaded["a"].tolist() == list(range(6)) and loaded["b"].tolist() == [[1, 1], [1, 1]]
    assert loaded["n"] == 3
    names = [key for key in _keys(s3, s3_url) if key.startswith("ckpt-000000000003/")]
    assert (
        len(names) == 3
        and names[-1] == "ckpt-000000000003/shard-00001-of-00002-" + (names[-1].rsplit("-", 1)[1])
    )


def test_a_commit_without_the_lease_numbers_after_the_highest(s3_url: str) -> None:
    with trainhooks.Saver() as saver:
        saver.save(STATE, s3_url, 5)
        upload, shards, tree = _upload(s3_url, 6, lock=False)
        info = saver.commit_with(
            s3_url, 6, lambda retention: upload.commit(shards, tree, {}, retention)
        )
    assert info.sequence == 2
    latest = trainhooks.latest_checkpoint(s3_url)
    assert latest is not None and latest.step == 6


def test_a_refused_commit_leaves_no_manifest_and_deletes_the_shards(s3_url: str, s3: Any) -> None:
    upload, shards, tree = _upload(s3_url, 1)
    try:
        with pytest.raises(CheckpointWriteError, match="wrote tensor 'a'"):
            upload.commit([shards[0], shards[0]], tree, {}, None)  # a chunk written twice
    finally:
        upload.close()
    assert _keys(s3, s3_url) == []
    assert trainhooks.list_checkpoints(s3_url) == []


def test_shards_of_a_save_that_never_committed_are_cleaned_by_the_next_writer(
    s3_url: str, s3: Any
) -> None:
    upload, _, _ = _upload(s3_url, 1)
    upload.close()  # as if rank 0 died before its manifest
    assert len(_keys(s3, s3_url)) == 2
    with trainhooks.Saver() as saver:
        saver.save(STATE, s3_url, 2)  # opening the writer deletes what no manifest names
    assert [key.split("/")[0] for key in _keys(s3, s3_url)] == ["ckpt-000000000002"] * 2
