"""``Saver.save_async``: the caller waits only for a snapshot; the future resolves once the
checkpoint is durable; memory stays at one reused copy of the state; restores and listings
never see a checkpoint in flight; errors come back typed, leaving nothing behind.

A background save is held at an exact moment with the ``block`` fault point (no sleeps).
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from _support.reliability import leftovers
from _support.store import blank_state, state_for, step_of
from trainhooks import (
    CheckpointFormatError,
    CheckpointWriteError,
    SaveFuture,
    Saver,
    latest_checkpoint,
    list_checkpoints,
    load,
    verify_checkpoint,
)
from trainhooks._store import _faults

PRE_COMMIT_POINTS = ("after_data_file", "before_manifest", "before_dir_fsync", "before_rename")


@pytest.fixture(autouse=True)
def _no_faults_left_behind() -> Iterator[None]:
    _faults.configure(None)
    yield
    _faults.configure(None)


def steps(directory: Path) -> list[int]:
    return [info.step for info in list_checkpoints(directory)]


def release_once_waited_on(point: str, future: Future[object]) -> threading.Thread:
    """A thread that lets a save held at ``point`` go once the caller waits for ``future``."""

    def run() -> None:
        assert _faults.wait_blocked(point)
        deadline = time.monotonic() + 60
        while not future._waiters:  # type: ignore[attr-defined]  # someone waits on it
            assert time.monotonic() < deadline
            time.sleep(0.001)
        _faults.release(point)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_the_future_resolves_with_the_durable_checkpoint_of_the_snapshot(tmp_path: Path) -> None:
    state = state_for(3)
    with Saver() as saver:
        future = saver.save_async(state, tmp_path, 3, metadata={"note": ["a"]})
        state["weight"] += 100  # the training thread goes on at once
        state["extra"]["count"] = 99
        info = future.result()

    assert isinstance(future, SaveFuture) and future.done()
    assert (future.step, future.directory) == (3, tmp_path.absolute())
    assert info.step == 3 and info.metadata == {"note": ["a"]}
    verify_checkpoint(info.path)
    saved = load(info.path)
    np.testing.assert_array_equal(saved["weight"], state_for(3)["weight"])
    assert saved["extra"]["count"] == 3


def test_a_checkpoint_in_flight_is_invisible_to_listings_and_restores(tmp_path: Path) -> None:
    with Saver() as saver:
        saver.save(state_for(1), tmp_path, 1)
        _faults.configure("before_rename=block")
        future = saver.save_async(state_for(2), tmp_path, 2)
        assert _faults.wait_blocked("before_rename")  # written, fsynced, not yet renamed

        assert not future.done()
        assert steps(tmp_path) == [1] and latest_checkpoint(tmp_path).step == 1
        with Saver() as reader:
            assert reader.restore(blank_state(), tmp_path).step == 1

        _faults.release("before_rename")
        assert future.result().step == 2
    assert steps(tmp_path) == [1, 2]


def test_restore_on_the_same_saver_waits_for_its_saves_in_flight(tmp_path: Path) -> None:
    with Saver() as saver:
        saver.save(state_for(1), tmp_path, 1)
        _faults.configure("before_rename=block")
        future = saver.save_async(state_for(2), tmp_path, 2)
        release_once_waited_on("before_rename", future)
        restored = blank_state()
        assert saver.restore(restored, tmp_path).step == 2
    assert step_of(restored) == 2


def test_a_save_due_while_the_previous_is_writing_waits_and_logs_the_wait(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Saver() as saver:  # max_pending=1
        _faults.configure("before_rename=block@1")
        first = saver.save_async(state_for(1), tmp_path, 1)
        release_once_waited_on("before_rename", first)
        with caplog.at_level(logging.INFO, logger="trainhooks"):
            second = saver.save_async(state_for(2), tmp_path, 2)
        assert first.done()  # the second snapshot was taken only after the first was written
        assert second.result().step == 2
    waits = [r.getMessage() for r in caplog.records if "waited" in r.getMessage()]
    assert len(waits) == 1 and "step 2 waited" in waits[0] and "step 1" in waits[0], waits


def test_saves_in_a_row_reuse_one_copy_of_the_state(tmp_path: Path) -> None:
    state = {"a": np.zeros(1_000_000), "b": np.zeros(1_000_000)}  # 16 MB of NumPy arrays
    nbytes = 16_000_000
    with Saver(max_to_keep=2) as saver:
        tracemalloc.start()
        saver.save_async(state, tmp_path, 0).result()
        held, first_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for step in range(1, 6):
            state["a"] += 1
            saver.save_async(state, tmp_path, step)
        saver.save_async(state, tmp_path, 6).result()
        _, later_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert nbytes <= held <= first_peak < nbytes + 1_000_000  # one copy: the staging buffers
    assert later_peak - held < 1_000_000  # the same buffers, refilled: no new copy
    assert steps(tmp_path) == [5, 6]
    np.testing.assert_array_equal(load(tmp_path / "ckpt-000000000006")["a"], np.full(1_000_000, 5))


def test_max_pending_2_lets_two_snapshots_be_in_flight_and_commits_them_in_order(
    tmp_path: Path,
) -> None:
    with Saver(max_to_keep=None, max_pending=2) as saver:
        _faults.configure("before_rename=block@1")
        first = saver.save_async(state_for(1), tmp_path, 1)
        assert _faults.wait_blocked("before_rename")
        second = saver.save_async(state_for(2), tmp_path, 2)  # no wait: a second slot
        assert not first.done() and not second.done()
        _faults.release("before_rename")
        infos = [first.result(), second.result()]
    assert [i.step for i in infos] == [1, 2] and infos[0].time <= infos[1].time
    assert steps(tmp_path) == [1, 2]


@pytest.mark.parametrize("point", PRE_COMMIT_POINTS)
def test_a_failed_background_write_raises_typed_from_the_future_and_leaves_nothing(
    tmp_path: Path, point: str
) -> None:
    with Saver(max_to_keep=2) as saver:
        saver.save(state_for(1), tmp_path, 1)
        _faults.configure(f"{point}=eio")
        future = saver.save_async(state_for(2), tmp_path, 2)
        with pytest.raises(CheckpointWriteError) as caught:
            future.result()
        _faults.configure(None)
        assert caught.value.errno == errno.EIO and caught.value.step == 2
        assert str(tmp_path) in str(caught.value) and "step 2" in str(caught.value)
        assert steps(tmp_path) == [1] and not leftovers(tmp_path)
        assert saver.save_async(state_for(3), tmp_path, 3).result().step == 3
    assert steps(tmp_path) == [1, 3]


def test_an_unsupported_value_raises_at_the_call_and_the_saver_goes_on(tmp_path: Path) -> None:
    with Saver() as saver:
        with pytest.raises(CheckpointFormatError, match="not supported"):
            saver.save_async({"x": object()}, tmp_path, 1)
        with pytest.raises(ValueError, match="step"):
            saver.save_async(state_for(1), tmp_path, -1)
        assert saver.save_async(state_for(2), tmp_path, 2).result().step == 2


def test_close_returns_only_once_the_saves_in_flight_are_durable(tmp_path: Path) -> None:
    saver = Saver()
    _faults.configure("after_data_file=sleep:0.2")  # a slow disk, so the write is in flight
    saver.save_async(state_for(1), tmp_path, 1)
    saver.close()
    assert steps(tmp_path) == [1] and not leftovers(tmp_path)


def test_sync_save_after_async_ones_commits_after_them(tmp_path: Path) -> None:
    with Saver(max_to_keep=None) as saver:
        _faults.configure("after_data_file=sleep:0.2")
        pending = saver.save_async(state_for(1), tmp_path, 1)
        _faults.configure(None)
        saver.save(state_for(2), tmp_path, 2)
        assert pending.done()
    assert steps(tmp_path) == [1, 2]


def test_an_interpreter_exiting_with_a_save_in_flight_finishes_it(tmp_path: Path) -> None:
    """No close(), no result(): the process ends right after save_async returns, while a
    slow disk is still writing; the save completes before the process exits."""
    program = (
        "import sys, numpy as np, trainhooks\n"
        "saver = trainhooks.Saver()\n"
        "saver.save_async({'w': np.arange(1000.0)}, sys.argv[1], 1)\n"
        "print('returned', flush=True)\n"
    )
    env = {**os.environ, "TRAINHOOKS_FAULTS": "after_data_file=sleep:0.5"}
    done = subprocess.run(
        [sys.executable, "-c", program, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout == "returned\n", done.stderr
    assert steps(tmp_path) == [1] and not leftovers(tmp_path)
    np.testing.assert_array_equal(load(tmp_path / "ckpt-000000000001")["w"], np.arange(1000.0))


def test_background_saves_take_the_next_commit_numbers_of_the_directory(tmp_path: Path) -> None:
    """A background save goes through the same commit as ``save``: its manifest records the
    directory's next commit number, after a synchronous save's and before the next one's."""
    with Saver(max_to_keep=None) as saver:
        saver.save(state_for(1), tmp_path, 1)
        saver.save_async(state_for(2), tmp_path, 2).result()
        saver.save_async(state_for(3), tmp_path, 3)
        saver.save(state_for(4), tmp_path, 4)  # waits for step 3 first
    sequences = [info.sequence for info in list_checkpoints(tmp_path)]
    assert sequences == sorted(sequences) and len(set(sequences)) == 4 and sequences[0] > 0


def test_a_background_save_shares_the_process_writer_of_its_directory(tmp_path: Path) -> None:
    """Two savers of one process on one directory share its writer in both modes: neither
    locks the other out, and one retention window covers all their saves."""
    with Saver(max_to_keep=2) as first, Saver(max_to_keep=2) as second:
        first.save(state_for(1), tmp_path, 1)
        second.save_async(state_for(2), tmp_path, 2).result()
        first.save_async(state_for(3), tmp_path, 3).result()
    assert steps(tmp_path) == [2, 3] and not leftovers(tmp_path)


def test_a_background_save_refuses_metadata_that_is_not_plain_json_before_writing(
    tmp_path: Path,
) -> None:
    with Saver() as saver, pytest.raises(CheckpointFormatError, match="metadata"):
        saver.save_async(state_for(1), tmp_path, 1, metadata={"lr": np.float32(0.1)})
    assert steps(tmp_path) == [] and not leftovers(tmp_path)
