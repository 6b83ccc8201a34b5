"""Background saves to object storage: the same contract as locally. The snapshot is taken
at the call, the upload runs on the saver's worker, the future (and ``after_save``) resolves
once the manifest's exclusive create succeeded, a failure comes back typed and leaves
nothing, a cancelled or killed multipart upload is aborted, close and exit wait."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import numpy as np
import pytest

import trainhooks
from _support.session import (
    Counter,
    DurableSaver,
    RecordingListener,
    quiet_session,
    roll_back_to_a_save_in_flight,
)
from trainhooks import CheckpointSaverHook, CheckpointWriteError, MonitoredSession, Saver
from trainhooks._store import _faults

MULTIPART = 40 * 1024 * 1024 // 4  # float32 elements: a multipart upload of 3 parts


@pytest.fixture(autouse=True)
def _no_faults_left_behind() -> Iterator[None]:
    _faults.configure(None)
    yield
    _faults.configure(None)


def steps(url: str) -> list[int]:
    return [info.step for info in trainhooks.list_checkpoints(url)]


def objects_of(s3, url: str, step: int) -> list[str]:  # type: ignore[no-untyped-def]
    return [p for p in s3.find(url) if f"/ckpt-{step:012d}/" in p]


def pending_uploads(s3, url: str) -> list[object]:  # type: ignore[no-untyped-def]
    bucket = url.split("/")[2]
    uploads: list[object] = s3.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])
    return uploads


def test_a_background_upload_commits_the_snapshot_and_is_unseen_until_its_manifest(
    s3_url: str, s3
) -> None:  # type: ignore[no-untyped-def]
    state = {"w": np.arange(1000, dtype=np.float32)}
    with Saver() as saver:
        saver.save(state, s3_url, 1)
        _faults.configure("remote_before_manifest=block")
        future = saver.save_async(state, s3_url, 2, metadata={"note": "bg"})
        state["w"] += 100  # the training thread goes on at once
        assert _faults.wait_blocked("remote_before_manifest")  # data uploaded, not committed
        assert not future.done() and len(objects_of(s3, s3_url, 2)) == 1
        assert steps(s3_url) == [1] and trainhooks.latest_checkpoint(s3_url).step == 1  # type: ignore[union-attr]
        _faults.release("remote_before_manifest")
        info = future.result()
    assert (future.step, str(future.directory)) == (2, s3_url)
    assert info.step == 2 and info.metadata == {"note": "bg"} and str(info.path).startswith("s3://")
    assert steps(s3_url) == [1, 2]
    np.testing.assert_array_equal(
        trainhooks.load(info.path)["w"], np.arange(1000, dtype=np.float32)
    )


@pytest.mark.parametrize("point", ["remote_after_data", "remote_before_manifest"])
def test_a_failed_background_upload_raises_typed_from_the_future_and_leaves_nothing(
    s3_url: str, s3, point: str
) -> None:  # type: ignore[no-untyped-def]
    with Saver() as saver:
        saver.save({"w": np.ones(10)}, s3_url, 1)
        _faults.configure(f"{point}=eio")
        future = saver.save_async({"w": np.ones(10)}, s3_url, 2)
        with pytest.raises(CheckpointWriteError) as caught:
            future.result()
        _faults.configure(None)
        assert caught.value.errno == errno.EIO and caught.value.step == 2
        assert s3_url in str(caught.value) and "step 2" in str(caught.value)
        assert steps(s3_url) == [1] and objects_of(s3, s3_url, 2) == []
        assert saver.save_async({"w": np.ones(10)}, s3_url, 3).result().step == 3
    assert steps(s3_url) == [1, 3]


def test_a_cancelled_background_multipart_upload_is_aborted(s3_url: str, s3) -> None:  # type: ignore[no-untyped-def]
    """Ctrl-C while the training thread waits cancels the save: the parts in flight end,
    no part starts after the cancel, the upload is aborted and nothing is left."""
    with Saver() as saver:
        _faults.configure("remote_after_part=block@1")
        future = saver.save_async({"x": np.zeros(MULTIPART, np.float32)}, s3_url, 1)
        assert _faults.wait_blocked("remote_after_part")
        saver._background._cancel.set()  # what cancel_unfinished() does on Ctrl-C
        _faults.release("remote_after_part")
        with pytest.raises(CheckpointWriteError) as caught:
            future.result()
        saver._background._cancel.clear()
    assert caught.value.errno == errno.ECANCELED
    assert steps(s3_url) == [] and objects_of(s3, s3_url, 1) == []
    assert pending_uploads(s3, s3_url) == []


_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from trainhooks import Saver

    url, step, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    saver = Saver(max_to_keep=None)
    future = saver.save_async({"x": np.full(size, step, np.float32)}, url, step)
    print("returned", flush=True)
    if sys.argv[4] == "wait":
        future.result()
    """
)


def _child(
    url: str, step: int, size: int, faults: str, wait: bool
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _CHILD, url, str(step), str(size), "wait" if wait else "exit"],
        env={**os.environ, "TRAINHOOKS_FAULTS": faults},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_process_killed_during_a_background_upload_keeps_the_previous_checkpoint(
    s3_url: str, s3
) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL mid-way through a background multipart upload: the previous checkpoint is
    intact, and the next writer deletes what is left and aborts the pending upload."""
    with Saver() as saver:
        saver.save({"x": np.full(10, 1, np.float32)}, s3_url, 1)
    done = _child(s3_url, 2, MULTIPART, "remote_after_part=kill@1", wait=True)
    assert done.returncode == -signal.SIGKILL and done.stdout == "returned\n", done.stderr
    assert len(pending_uploads(s3, s3_url)) == 1
    assert steps(s3_url) == [1]
    assert float(trainhooks.load(f"{s3_url}/ckpt-000000000001")["x"][0]) == 1.0
    with Saver(max_to_keep=None) as saver:  # the killed writer's lease names a dead pid
        assert saver.save_async({"x": np.full(10, 3, np.float32)}, s3_url, 3).result().step == 3
    assert pending_uploads(s3, s3_url) == [] and objects_of(s3, s3_url, 2) == []
    assert steps(s3_url) == [1, 3]


def test_an_interpreter_exiting_with_a_background_upload_finishes_it(s3_url: str) -> None:
    """No close(), no result(): the process ends while a slow multipart upload is in
    flight; its parts go up (on plain threads: executors refuse work at exit) and the
    checkpoint is committed before the process exits."""
    done = _child(s3_url, 1, MULTIPART, "remote_after_part=sleep:0.3", wait=False)
    assert done.returncode == 0 and done.stdout == "returned\n", done.stderr
    assert steps(s3_url) == [1]
    saved = trainhooks.load(f"{s3_url}/ckpt-000000000001")["x"]
    assert saved.shape == (MULTIPART,) and bool((saved == 1).all())


def test_a_session_saving_to_s3_in_the_background_calls_after_save_and_ends_durable(
    s3_url: str,
) -> None:
    trace: list[str] = []
    counter = Counter()
    hook = CheckpointSaverHook(
        s3_url, save_steps=2, async_save=True, listeners=[RecordingListener("L", trace)]
    )
    with quiet_session(
        checkpoint_dir=s3_url, state=counter.state, hooks=[hook], save_checkpoint_secs=None
    ) as sess:
        for _ in range(5):
            sess.run(counter.step)
    assert steps(s3_url)[-1] == 5  # end() saved the last step and waited for it
    assert "L.after_save(5)" in trace and trace[-1] == "L.end(5)"
    restored = {"w": np.zeros(4, np.float32)}
    assert Saver().restore(restored, s3_url).step == 5 and restored["w"][0] == 5.0


def test_a_failed_background_upload_raises_at_the_next_step_boundary(s3_url: str) -> None:
    log: list[str] = []
    saver = DurableSaver()
    hook = CheckpointSaverHook(
        s3_url, save_steps=2, saver=saver, listeners=[RecordingListener("a", log)], async_save=True
    )
    state = {"w": np.zeros(4, np.float32)}

    def step() -> None:
        saver.wait_durable()
        state["w"] += 1

    _faults.configure("remote_before_manifest=eio@2")  # hit 1: the save at creation
    with saver, pytest.raises(CheckpointWriteError) as caught:  # noqa: SIM117
        with MonitoredSession(
            hooks=[hook, trainhooks.StopAtStepHook(last_step=10)], state=state
        ) as session:
            while not session.should_stop():
                session.run(step)
    assert session.global_step == 3
    assert caught.value.step == 2 and caught.value.errno == errno.EIO
    assert log == ["a.begin", "a.before_save(0)", "a.after_save(0)", "a.before_save(2)"]
    assert steps(s3_url) == [0]


def test_a_rollback_to_a_step_whose_background_upload_is_in_flight_waits_for_it(
    s3_url: str,
) -> None:
    roll_back_to_a_save_in_flight(s3_url, "remote_before_manifest")
