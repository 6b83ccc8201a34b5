"""A collective save killed at each of its fault points, on real 2-rank gloo jobs.

One zygote process forks the ranks of every job at once (a SIGKILL of rank 1 before and
after its shard's fsync, of rank 0 before and after the commit's rename, and rank 1 stalled
before its fsync under a 5-second ``timeout``); the test then checks what each left on disk
and what the surviving rank raised. A second zygote relaunches one 2-rank job that resumes
every directory from its newest valid checkpoint (bit-exact) and saves on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import trainhooks
from _support.reliability import LONG, leftovers
from _support import dist_workers as w

HERE = Path(__file__).resolve().parents[1]

# (fault point, rank that dies there, action, whether step 2 ends up committed)
POINTS = [
    ("before_shard_fsync", 1, "kill", False),
    ("after_shard_fsync", 1, "kill", False),
    ("before_rename", 0, "kill", False),
    ("after_rename", 0, "kill", True),
    ("before_shard_fsync", 1, "block", False),  # a stalled rank: the timeout ends the save
]
LOAD_STALL = "load-before_shard_read-block"
EIO = "before_shard_fsync-eio"
STALL_TIMEOUT = 5.0
KILL_TIMEOUT = 120.0  # a killed peer closes its connections: this bound is never reached


def _name(point: str, action: str) -> str:
    return f"{point}-{action}"



def _run_zygote(plan: dict[str, Any], root: Path) -> dict[str, Any]:
    path = root / f"plan-{plan['phase']}.json"
    path.write_text(json.dumps(plan))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    env.pop("TRAINHOOKS_FAULTS", None)
    done = subprocess.run(
        [sys.executable, "-m", "_support.dist_kill_child", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # a guard against a hang, not a figure
    )
    assert done.returncode == 0, done.stderr[-4000:]
    exits: dict[str, Any] = json.loads((root / f"exits-{plan['phase']}.json").read_text())
    return {"exits": exits, "stderr": done.stderr}


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every fault point's job run at once; what each left, seen right after the crash."""
    root = tmp_path_factory.mktemp("kill")
    jobs = [
        {
            "dir": str(root / _name(point, action)),
            "port": w.free_port(),
            "point": point,
            "rank": rank,
            "action": action,
            "timeout": STALL_TIMEOUT if action == "block" else KILL_TIMEOUT,
        }
        for point, rank, action, _ in POINTS
    ]
    load_job = {
        "dir": str(root / LOAD_STALL),
        "port": w.free_port(),
        "point": "before_shard_read",
        "rank": 1,
        "action": "block",
        "timeout": STALL_TIMEOUT,
        "load": True,
    }
    eio_job = {**jobs[0], "dir": str(root / EIO), "port": w.free_port(), "action": "eio"}
    run = _run_zygote({"phase": "crash", "jobs": [*jobs, load_job, eio_job]}, root)
    seen: dict[str, Any] = {"root": root, "exits": run["exits"], "stderr": run["stderr"]}
    for job in [*jobs, load_job, eio_job]:
        directory = Path(job["dir"])
        listed = trainhooks.list_checkpoints(directory)
        seen[job["dir"]] = {
            "steps": [info.step for info in listed],
            "leftovers": leftovers(directory),
            "verified": [trainhooks.verify_checkpoint(info.path).step for info in listed],
            "results": {
                rank: json.loads(p.read_text())
                for rank in range(2)
                if (p := directory / f"result-{rank}.json").exists()
            },
        }
    return seen


@pytest.fixture(scope="module")
def resumed(crashed: dict[str, Any]) -> dict[str, Any]:
    root: Path = crashed["root"]
    dirs = [str(root / _name(point, action)) for point, _, action, _ in POINTS]
    run = _run_zygote({"phase": "resume", "port": w.free_port(), "dirs": dirs}, root)
    assert run["exits"] == {"resume": {"0": 0, "1": 0}}, run["stderr"][-4000:]
    return {"root": root, "dirs": dirs}


@pytest.mark.parametrize(("point", "rank", "action", "commits"), POINTS)
def test_killed_rank_leaves_newest_valid_and_survivor_gets_typed_error(
    crashed: dict[str, Any], point: str, rank: int, action: str, commits: bool
) -> None:
    directory = str(crashed["root"] / _name(point, action))
    seen = crashed[directory]
    exits = crashed["exits"][directory]
    survivor = 1 - rank
    assert exits[str(rank)] == -9, crashed["stderr"][-3000:]  # SIGKILLed (or killed stalled)
    assert exits[str(survivor)] == 0, crashed["stderr"][-3000:]  # ended by itself, no hang
    # Step 2 is committed only when the coordinator died after its rename.
    assert seen["steps"] == ([1, 2] if commits else [1])
    assert seen["verified"] == seen["steps"]
    result = seen["results"][survivor]
    assert result["error"] == "CheckpointTimeoutError", result
    assert result["rank"] == survivor and result["step"] == 2
    assert result["path"] == directory
    assert result["collective"] and result["collective"] in result["message"]
    if survivor == 0:  # the coordinator knows: nothing committed, its staging removed
        assert result["committed"] is False
        assert seen["leftovers"] == set()
    else:  # rank 1 cannot know whether the dead coordinator committed
        assert result["committed"] is None
        assert len(seen["leftovers"]) == (0 if commits else 1)  # the staged save
    if action == "block":
        assert f"{STALL_TIMEOUT:g} s" in result["message"]


def test_rank_stalled_in_a_load_gives_typed_error_on_the_other(crashed: dict[str, Any]) -> None:
    directory = str(crashed["root"] / LOAD_STALL)
    assert crashed["exits"][directory] == {"0": 0, "1": -9}, crashed["stderr"][-3000:]
    result = crashed[directory]["results"][0]
    assert result["error"] == "CheckpointTimeoutError" and result["rank"] == 0, result
    assert result["collective"] == "the exchange confirming every rank read its chunks"
    assert f"{STALL_TIMEOUT:g} s" in result["message"]
    assert crashed[directory]["steps"] == [1]


def test_io_error_on_one_rank_is_the_same_typed_error_on_every_rank(
    crashed: dict[str, Any],
) -> None:
    # No rank is lost: DCP carries the failure to every rank, which raise the store's own
    # error; the coordinator removed the staging directory and the retry commits.
    directory = str(crashed["root"] / EIO)
    assert crashed["exits"][directory] == {"0": 0, "1": 0}, crashed["stderr"][-3000:]
    for rank in (0, 1):
        result = crashed[directory]["results"][rank]
        assert result["error"] == "CheckpointWriteError", result
        assert "injected I/O error" in result["message"] and result["step"] == 2
        assert result["retried"] == 2
    assert crashed[directory]["steps"] == [1, 2]
    assert crashed[directory]["leftovers"] == set()


@pytest.mark.parametrize(("point", "rank", "action", "commits"), POINTS)
def test_relaunch_resumes_bit_exact_and_next_save_cleans_leftovers(
    resumed: dict[str, Any], point: str, rank: int, action: str, commits: bool
) -> None:
    directory = resumed["root"] / _name(point, action)
    # The ranks checked the loaded state bit for bit against what was saved at that step.
    assert json.loads((directory / "resumed.json").read_text()) == {"from": 2 if commits else 1}
    listed = trainhooks.list_checkpoints(directory)
    assert [info.step for info in listed] == ([1, 2, 3] if commits else [1, 3])
    for info in listed:
        trainhooks.verify_checkpoint(info.path)
    assert leftovers(directory) == set()


@pytest.mark.skipif(not LONG, reason="long run: set TRAINHOOKS_LONG=1")
@pytest.mark.long
@pytest.mark.timeout(7200)
def test_many_kills_at_random_points(tmp_path: Path) -> None:
    """Long mode: rounds of four jobs, each killing a random rank at a random point of the
    collective save (any rank at a shard point, the coordinator at a commit point); the
    survivor ends by itself, everything listed verifies, and every directory resumes."""
    import random

    generator = random.Random(13)
    shard_points = ["before_shard_write", "before_shard_fsync", "after_shard_fsync"]
    commit_points = ["before_manifest", "before_dir_fsync", "before_rename", "after_rename"]
    # Every rank writes a shard (the coordinator too); only the coordinator commits.
    points = [(p, r, "kill", None) for p in shard_points for r in (0, 1)]
    points += [(p, 0, "kill", None) for p in commit_points]
    for round_index in range(int(os.environ.get("TRAINHOOKS_KILL_ROUNDS", "10"))):
        root = tmp_path / f"round-{round_index}"
        root.mkdir()
        chosen = [generator.choice(points) for _ in range(4)]
        jobs = [
            {
                "dir": str(root / f"{i}-{point}"),
                "port": w.free_port(),
                "point": point,
                "rank": rank,
                "action": "kill",
                "timeout": KILL_TIMEOUT,
            }
            for i, (point, rank, _, _) in enumerate(chosen)
        ]
        run = _run_zygote({"phase": "crash", "jobs": jobs}, root)
        for job in jobs:
            assert run["exits"][job["dir"]][str(job["rank"])] == -9
            assert run["exits"][job["dir"]][str(1 - job["rank"])] == 0
            listed = trainhooks.list_checkpoints(job["dir"])
            for info in listed:
                trainhooks.verify_checkpoint(info.path)
        resume = {"phase": "resume", "port": w.free_port(), "dirs": [j["dir"] for j in jobs]}
        assert _run_zygote(resume, root)["exits"] == {"resume": {"0": 0, "1": 0}}
