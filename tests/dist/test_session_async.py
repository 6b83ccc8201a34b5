"""``MonitoredTrainingSession(async_save=True)`` on every rank of a real gloo job.

One 2-rank launch runs every scenario (``_support/dist_session_async.py``); the tests assert
on what each rank saw and on the checkpoints left behind, loaded in this process.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch.multiprocessing as mp

import trainhooks
from _support import dist_session_async as s
from _support import dist_workers as w
from _support.reliability import leftovers



# Generous for a loaded 2-core box (the launch takes ~25 s idle); a hang (a rank left
# waiting in a collective for the group's 30-minute timeout) fails instead of blocking.
LAUNCH_TIMEOUT_S = 300.0


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dist-session-async")
    context = mp.spawn(s.two_ranks, args=(2, w.free_port(), str(root)), nprocs=2, join=False)
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    # join() returns once any rank exits (True when all have), or at its timeout
    while not context.join(timeout=max(deadline - time.monotonic(), 0.01)):
        if time.monotonic() >= deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the launch did not end within {LAUNCH_TIMEOUT_S:g} s: a rank hung")
    return root



def test_close_waits_for_the_save_in_flight_and_every_rank_sees_it(launched: Path) -> None:
    assert [r["at_close"] for r in w.rank_results(launched, "train")] == [[0, 3], [0, 3]]


def test_relaunch_restores_the_background_checkpoint_bit_exact(launched: Path) -> None:
    for result in w.rank_results(launched, "train"):
        assert result["restored"] == 3 and result["bit_exact"] is True


def test_parameters_changed_after_the_save_are_not_in_the_checkpoint(launched: Path) -> None:
    loaded = trainhooks.load(launched / "train" / "ckpt-000000000006")
    expected = dict(np.load(launched / "expected-6.npz"))
    actual = w.flat_arrays({"model": loaded["model"], "optim": loaded["optim"]})
    w.assert_same(actual, expected, "step 6")


def test_after_save_comes_at_a_sync_point_after_the_commit_in_tf_order(launched: Path) -> None:
    chief, other = w.rank_results(launched, "train")
    assert other["events"] == [[], []]  # the listener is the chief's
    first, second = ([tuple(e) for e in events] for events in chief["events"])
    # (event, checkpoint step, global step when called): at most one save in flight, so
    # before_save(S1), after_save(S1), before_save(S2); after_save at a later sync point
    # (at the next save due at the latest, or at the close)
    assert first[0] == ("before", 0, 0) and first[1][:2] == ("after", 0)
    assert 1 <= first[1][2] <= 3
    assert first[2:] == [("before", 3, 3), ("after", 3, 3)]  # the close waited for it
    stop = chief["step"]
    expected = [("before", 3, 3), ("after", 3, 4)]  # restored at 3: not rewritten
    expected += [("before", 6, 6), ("after", 6, 7)]  # finished on both ranks before step 7
    expected += [("before", 9, 9), ("after", 9, stop)]
    if stop != 12:
        expected += [("before", stop, stop), ("after", stop, stop)]  # the final save
    else:
        expected += [("before", 12, 12), ("after", 12, 12)]  # started at 12, waited for
    assert second == expected


def test_after_save_asking_to_stop_stops_every_rank_at_the_same_step(launched: Path) -> None:
    chief, other = w.rank_results(launched, "train")
    [stopped_at] = [at for kind, step, at in chief["events"][1] if kind == "after" and step == 9]
    assert chief["step"] == other["step"] == stopped_at
    assert 10 <= stopped_at <= 12
    assert chief["after_close"] == other["after_close"]
    assert chief["after_close"][-1] == stopped_at  # the last save is committed at the close
    for info in trainhooks.list_checkpoints(launched / "train"):
        trainhooks.verify_checkpoint(info.path)


def test_a_failed_background_save_raises_the_same_typed_error_on_every_rank(
    launched: Path,
) -> None:
    chief, other = w.rank_results(launched, "eio")
    assert chief["error"] == other["error"] == "CheckpointWriteError"
    assert chief["message"] == other["message"] and "step 3" in chief["message"]
    assert chief["step"] == other["step"] and 4 <= chief["step"] <= 6
    assert chief["steps"] == other["steps"] == [0]
    assert leftovers(launched / "eio") == set()


def test_a_listener_failing_before_the_save_stops_every_rank_with_its_error(
    launched: Path,
) -> None:
    chief, other = w.rank_results(launched, "listener")
    assert chief["error"] == other["error"] == "ValueError"
    assert chief["message"] == other["message"] == "the listener refuses the save of step 3"
    assert chief["step"] == other["step"] == 3
    assert chief["steps"] == other["steps"] == [0]


def test_fsdp_state_saved_in_the_background_restores_bit_exact(launched: Path) -> None:
    # compared inside each rank with the state at the close (the background save of 4)
    assert w.rank_results(launched, "fsdp") == [{"restored": 4, "steps": [0, 2, 4]}] * 2


@pytest.mark.parametrize("kind", ["async", "blocking"])
def test_a_commit_the_chief_refuses_before_writing_fails_every_rank_at_once(
    launched: Path, kind: str
) -> None:
    # the chief's saver refuses the commit of 3 (its directory was moved aside after the
    # save of 0) before DCP's save begins: the other rank, already in it, raises the same
    # error instead of waiting for the group's timeout
    chief, other = w.rank_results(launched, f"moved-{kind}")
    assert chief["error"] == other["error"] == "CheckpointWriteError"
    assert chief["message"] == other["message"]
    assert "removed or replaced" in chief["message"] and "step 3" in chief["message"]
    assert chief["step"] == other["step"]
    assert chief["step"] == 3 if kind == "blocking" else 4 <= chief["step"] <= 6
    assert chief["steps"] == other["steps"] == [0]  # the committed one, untouched
    moved = s.moved(launched / f"moved-{kind}")
    trainhooks.verify_checkpoint(trainhooks.list_checkpoints(moved)[0].path)
    assert leftovers(moved) == set()
    assert not (launched / f"moved-{kind}").exists()  # nothing written after the move


@pytest.mark.parametrize("kind", ["async", "blocking"])
def test_a_state_one_rank_cannot_copy_fails_every_rank_with_its_error(
    launched: Path, kind: str
) -> None:
    # rank 1's state holds a sparse tensor at the save of 3: both ranks raise its
    # CheckpointFormatError at that sync point, and nothing of the save is left
    chief, other = w.rank_results(launched, f"copy-{kind}")
    assert chief["error"] == other["error"] == "CheckpointFormatError"
    assert chief["message"] == other["message"] and "sparse" in chief["message"].lower()
    assert chief["step"] == other["step"] == 3
    assert chief["steps"] == other["steps"] == [0]
    assert leftovers(launched / f"copy-{kind}") == set()


@pytest.mark.parametrize(("name", "step"), [("listener-blocking", 3), ("listener-end", 4)])
def test_a_listener_failing_before_a_blocking_save_stops_every_rank_with_its_error(
    launched: Path, name: str, step: int
) -> None:
    # the other rank waits in the save the chief's hook never makes (at a sync point, or
    # the final save of the close): the chief fails it with the listener's error
    chief, other = w.rank_results(launched, name)
    assert chief["error"] == other["error"] == "ValueError"
    assert chief["message"] == other["message"] == f"the listener refuses the save of step {step}"
    assert chief["step"] == other["step"] == step
    assert chief["steps"] == other["steps"] == ([0, 3] if step == 4 else [0])


@pytest.mark.parametrize("kind", ["async", "blocking"])
def test_the_chiefs_retention_failing_after_the_commit_fails_every_rank(
    launched: Path, kind: str
) -> None:
    # the save of 3 is committed; deleting the checkpoint of 0 (max_to_keep=1) fails on
    # the chief alone: the commit's outcome carries that error to the other rank
    chief, other = w.rank_results(launched, f"retention-{kind}")
    assert chief["error"] == other["error"] == "CheckpointWriteError"
    assert chief["message"] == other["message"]
    assert "could not delete the checkpoint of step 0" in chief["message"]
    assert chief["step"] == other["step"]
    assert chief["step"] == 3 if kind == "blocking" else 4 <= chief["step"] <= 6
    assert chief["steps"] == other["steps"] == [3]
    [newest] = trainhooks.list_checkpoints(launched / f"retention-{kind}")
    trainhooks.verify_checkpoint(newest.path)
