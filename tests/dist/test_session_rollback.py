"""Rollbacks and recoverable errors in a distributed session (issue 15 on every rank).

One 2-rank gloo launch runs the scenarios of ``_support/dist_rollback.py``; each rank
writes what it saw, and the tests compare the ranks with each other and with a plain DDP
loop that leaves the skipped steps out.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import torch.multiprocessing as mp

import trainhooks
from _support import dist_rollback as r
from _support import dist_workers as w



@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dist-rollback")
    mp.spawn(r.two_ranks, args=(2, w.free_port(), str(root)), nprocs=2, join=True)
    return root



def _run(launched: Path, name: str) -> list[dict[str, Any]]:
    return [ranks[name] for ranks in w.rank_results(launched, "rollbacks")]


def _reference(launched: Path, skipped: int) -> list[str]:
    return [ranks[str(skipped)] for ranks in w.rank_results(launched, "references")]


def _steps(directory: Path) -> list[int]:
    return [info.step for info in trainhooks.list_checkpoints(directory)]


def test_a_rollback_asked_on_one_rank_at_a_sync_point_is_made_by_every_rank(
    launched: Path,
) -> None:
    ranks = _run(launched, "at_sync")  # rank 1 asks at step 8: back to 4, skip 8
    assert [(x["step"], x["skipped"], x["creations"]) for x in ranks] == [(12, [8], [0, 4])] * 2
    assert [x["digest"] for x in ranks] == _reference(launched, 8)
    assert [x["runs"] for x in ranks] == [[1, 2, 3, 4, 5, 6, 7, 8, 5, 6, 7, 9, 10, 11, 12]] * 2


def test_a_rollback_asked_between_sync_points_is_agreed_at_the_next_one(launched: Path) -> None:
    ranks = _run(launched, "between")  # rank 1 asks at 9 (back to 8); agreed at 12
    assert [(x["step"], x["skipped"], x["creations"]) for x in ranks] == [(12, [9], [0, 8])] * 2
    assert [x["digest"] for x in ranks] == _reference(launched, 9)
    assert [x["runs"][:12] for x in ranks] == [list(range(1, 13))] * 2  # 10-12 undone too
    assert [x["runs"][12:] for x in ranks] == [[10, 11, 12]] * 2
    assert 8 in _steps(launched / "between")  # its background save, waited for first


def test_a_nan_on_one_rank_rolls_every_rank_back_past_the_first_bad_step(launched: Path) -> None:
    ranks = _run(launched, "nan")  # NaN from rank 1 at 6 (rank 0 sees it at 7); sync at 8
    assert [(x["step"], x["skipped"], x["creations"]) for x in ranks] == [(12, [6], [0, 4])] * 2
    assert [x["digest"] for x in ranks] == _reference(launched, 6)
    assert _steps(launched / "nan") == [0, 4, 8, 12]  # 8 saved after the rollback only
    trainhooks.verify_checkpoint(launched / "nan" / "ckpt-000000000008")


def test_a_rollback_still_unagreed_at_the_close_skips_the_final_save_on_every_rank(
    launched: Path,
) -> None:
    ranks = _run(launched, "closing")
    assert [x["step"] for x in ranks] == [11, 11]
    assert all("rollback was still to be agreed" in x["message"] for x in ranks)
    assert _steps(launched / "closing") == [0, 4, 8]  # the steps to undo were not saved


def test_a_recoverable_error_at_a_sync_point_recovers_every_rank(launched: Path) -> None:
    ranks = [x["recovered"] for x in w.rank_results(launched, "recoverable")]
    straight = [x["straight"] for x in w.rank_results(launched, "recoverable")]
    assert [(x["step"], x["skipped"], x["creations"]) for x in ranks] == [(12, [], [0, 8])] * 2
    assert [x["digest"] for x in ranks] == straight


def test_a_recoverable_error_outside_a_sync_point_is_a_typed_error(launched: Path) -> None:
    errors = [x["error"] for x in w.rank_results(launched, "recoverable")]
    assert [(e["type"], e["rank"], e["step"], e["cause"]) for e in errors] == [
        ("DistributedRecoveryError", 0, 2, "ConnectionError"),
        ("DistributedRecoveryError", 1, 2, "ConnectionError"),
    ]
    assert all("not at a sync point" in e["message"] for e in errors)
