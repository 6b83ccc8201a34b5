"""``MonitoredTrainingSession`` on every rank of a real gloo job (issue 13, the session).

One 2-rank launch runs every scenario (``_support/dist_session.py``) and writes what each
rank saw; the tests assert on those files and on the checkpoints left behind, and the test
process itself is the one-process end (a 2 -> 1 restore, ``trainhooks.load``, ``verify``).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp

import trainhooks
from _support import dist_session as s
from _support import dist_workers as w
from trainhooks import EXIT_PREEMPTED
from trainhooks.distributed import ModelOptimizerState, ShardedWriter, load_sharded



@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dist-session")
    mp.spawn(s.two_ranks, args=(2, w.free_port(), str(root)), nprocs=2, join=True)
    return root



def _steps(directory: Path) -> list[int]:
    return [info.step for info in trainhooks.list_checkpoints(directory)]


def test_ddp_run_resumed_after_a_crash_is_bit_exact(launched: Path) -> None:
    for result in w.rank_results(launched, "resume"):
        assert result["straight"]["step"] == result["resumed"]["step"] == 12
        assert result["resumed"]["restored"] == 4  # the crash came at step 7
        assert result["resumed"]["digest"] == result["straight"]["digest"]
    assert _steps(launched / "straight") == [0, 4, 8, 12]


def test_corrupt_newest_shard_every_rank_falls_back_to_the_same_checkpoint(
    launched: Path,
) -> None:
    ranks = w.rank_results(launched, "corrupt")
    assert [r["restored"] for r in ranks] == [8, 8]
    straight = w.rank_results(launched, "resume")[0]["straight"]["digest"]
    assert [r["digest"] for r in ranks] == [straight, straight]  # and trained on exactly
    trainhooks.verify_checkpoint(launched / "resumed" / "ckpt-000000000012")  # re-saved


def test_listener_on_rank_zero_stops_every_rank_at_its_step(launched: Path) -> None:
    ranks = w.rank_results(launched, "listener")
    assert [r["step"] for r in ranks] == [6, 6]
    assert ranks[0]["saved"] == [0, 3, 6] and ranks[1]["saved"] == []  # chief-only listener
    assert _steps(launched / "listener") == [3, 6]  # the chief's max_to_keep=2


def test_stop_requested_on_one_rank_stops_all_at_the_next_sync_point(launched: Path) -> None:
    assert [r["step"] for r in w.rank_results(launched, "stop")] == [8, 8]  # asked at 5, K=4
    assert _steps(launched / "stop") == [0, 8]  # the final save at close is collective


def test_sigterm_to_one_rank_saves_and_preempts_every_rank(launched: Path) -> None:
    ranks = w.rank_results(launched, "sigterm")
    assert [(r["step"], r["code"]) for r in ranks] == [(8, EXIT_PREEMPTED)] * 2
    assert _steps(launched / "sigterm") == [0, 8]


def test_fsdp_state_restores_on_two_ranks_and_into_one_process(launched: Path) -> None:
    assert w.rank_results(launched, "fsdp") == [{"restored": 4, "extra": [1, 2]}] * 2
    path = launched / "fsdp" / "ckpt-000000000004"
    model = w.make_model(seed=9)
    optim = torch.optim.Adam(model.parameters(), lr=0.01)
    load_sharded({"model_opt": ModelOptimizerState(model, optim)}, path)  # 2 -> 1
    expected = dict(np.load(launched / "fsdp-expected.npz"))
    w.assert_same(w.flat_arrays(w.full(w.state(model, optim))), expected, "2 -> 1")
    trainhooks.verify_checkpoint(path)


def test_trainhooks_load_reads_a_session_checkpoint_in_one_process(launched: Path) -> None:
    loaded = trainhooks.load(launched / "straight" / "ckpt-000000000012")
    assert loaded["data"] == {"epoch": 11}
    weights = loaded["model"]["module.0.weight"]
    assert isinstance(weights, np.ndarray) and weights.shape == (16, 8)
    assert loaded["optim"]["state"][0]["exp_avg"].shape == (16, 8)


def test_save_secs_saves_land_on_sync_points(launched: Path) -> None:
    assert [r["step"] for r in w.rank_results(launched, "secs")] == [10, 10]
    assert _steps(launched / "secs") == [0, 4, 8, 10]  # timer due at 3 and 7; end at 10


def test_failed_collective_save_raises_the_same_typed_error_on_every_rank(
    launched: Path,
) -> None:
    ranks = w.rank_results(launched, "failed")
    assert ranks == [{"step": 4, "error": "CheckpointWriteError"}] * 2
    assert _steps(launched / "failed") == [0]
    assert not [p for p in (launched / "failed").iterdir() if ".tmp-" in p.name]


def test_an_error_on_the_chief_at_a_sync_point_reaches_every_rank(launched: Path) -> None:
    results = w.rank_results(launched, "refused")
    assert [r["error"] for r in results] == ["ValueError"] * 2  # the chief's, on every rank
    assert [r["message"] for r in results] == ["no schedule for the create phase"] * 2


def test_chief_saver_retention_applies_to_sharded_commits(tmp_path: Path) -> None:
    # One process, no process group: DCP saves locally, the saver keeps 2 checkpoints.
    state = {"w": torch.arange(4.0)}
    with trainhooks.Saver(max_to_keep=2) as saver:
        for step in (1, 2, 3):

            def commit(retention: Any, step: int = step) -> trainhooks.CheckpointInfo:
                writer = ShardedWriter(tmp_path, step, lock=False, retention=retention)
                dcp.save(state, storage_writer=writer)
                assert writer.info is not None
                return writer.info

            saver.commit_with(tmp_path, step, commit)
    assert _steps(tmp_path) == [2, 3]
    assert trainhooks.load(tmp_path / "ckpt-000000000003")["w"].tolist() == [0, 1, 2, 3]
