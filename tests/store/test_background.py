"""The background writer: saves run in order on one worker thread that exists only while
there is work, at most ``max_pending`` unfinished, and Ctrl-C while waiting cancels them
cleanly; a commit given a set ``cancel`` event stops before its commit point."""

from __future__ import annotations

import errno
import gc
import signal
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from trainhooks import CheckpointInfo, CheckpointWriteError, list_checkpoints
from trainhooks._store._background import BackgroundWriter, SaveFuture
from trainhooks._store._commit import TensorSource, commit_checkpoint


def _info(step: int) -> CheckpointInfo:
    return CheckpointInfo(step, Path(f"ckpt-{step}"), 0.0, 0, 0, 1, {})


def _wait_until_waited_on(future: Future[object]) -> None:
    """Return once some thread waits on ``future`` (``concurrent.futures.wait`` registers
    a waiter on it first): a condition, polled; no fixed sleep."""
    deadline = time.monotonic() + 60
    while not future._waiters:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "nobody waited on the future"
        time.sleep(0.001)


def test_jobs_run_in_order_and_resolve_their_futures() -> None:
    writer = BackgroundWriter(max_pending=3)
    order: list[int] = []
    released: list[int] = []

    def job_for(step: int):  # type: ignore[no-untyped-def]
        def job(cancel: threading.Event) -> CheckpointInfo:
            order.append(step)
            return _info(step)

        return job

    futures = [
        writer.submit(SaveFuture(step, "d"), job_for(step), lambda s=step: released.append(s))
        for step in (5, 3, 9)
    ]
    writer.drain()

    assert [f.result().step for f in futures] == [5, 3, 9]
    assert order == released == [5, 3, 9]  # in submission order, memory freed before resolving


def test_a_failing_job_raises_its_own_error_from_the_future() -> None:
    writer = BackgroundWriter()

    def job(cancel: threading.Event) -> CheckpointInfo:
        raise CheckpointWriteError("disk full", step=4, errno=errno.ENOSPC)

    future = writer.submit(SaveFuture(4, "d"), job, lambda: None)
    writer.drain()

    with pytest.raises(CheckpointWriteError, match="disk full") as caught:
        future.result()
    assert caught.value.errno == errno.ENOSPC and caught.value.step == 4


def test_one_worker_thread_serves_every_save_and_ends_at_close() -> None:
    writer = BackgroundWriter()
    workers: list[threading.Thread] = []

    def job_for(step: int):  # type: ignore[no-untyped-def]
        def job(cancel: threading.Event) -> CheckpointInfo:
            workers.append(threading.current_thread())
            return _info(step)

        return job

    for step in range(3):
        writer.submit(SaveFuture(step, "d"), job_for(step), lambda: None).result()
    (worker,) = set(workers)
    assert worker.name == "trainhooks-save" and worker.daemon

    writer.close()
    assert not worker.is_alive()
    assert writer.submit(SaveFuture(3, "d"), job_for(3), lambda: None).result().step == 3
    assert workers[-1] is not worker  # a new worker after the close
    writer.close()


def test_a_writer_dropped_unclosed_ends_its_worker_thread() -> None:
    writer = BackgroundWriter()
    workers: list[threading.Thread] = []

    def job(cancel: threading.Event) -> CheckpointInfo:
        workers.append(threading.current_thread())
        return _info(1)

    writer.submit(SaveFuture(1, "d"), job, lambda: None).result()
    del writer
    gc.collect()
    workers[0].join(timeout=60)
    assert not workers[0].is_alive()


def test_wait_for_slot_blocks_until_the_oldest_save_finished() -> None:
    writer = BackgroundWriter(max_pending=1)
    go = threading.Event()

    def slow(cancel: threading.Event) -> CheckpointInfo:
        go.wait()
        return _info(1)

    first = writer.submit(SaveFuture(1, "d"), slow, lambda: None)
    threading.Thread(target=lambda: (_wait_until_waited_on(first), go.set())).start()

    waited = writer.wait_for_slot(2)

    assert first.done() and waited > 0
    assert writer.wait_for_slot(3) == 0.0  # nothing unfinished: no wait


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_max_pending_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="max_pending"):
        BackgroundWriter(max_pending=bad)  # type: ignore[arg-type]


def test_ctrl_c_while_waiting_cancels_the_save_then_propagates() -> None:
    writer = BackgroundWriter(max_pending=2)
    started = threading.Event()

    def cancellable(cancel: threading.Event) -> CheckpointInfo:
        started.set()
        cancel.wait()  # what a commit does between chunks: stop once cancelled
        raise CheckpointWriteError("cancelled", step=1, errno=errno.ECANCELED)

    running = writer.submit(SaveFuture(1, "d"), cancellable, lambda: None)
    queued = writer.submit(SaveFuture(2, "d"), lambda cancel: _info(2), lambda: None)

    def press_ctrl_c() -> None:
        started.wait()
        _wait_until_waited_on(running)
        # Ctrl-C: SIGINT to the main thread, which interrupts its blocked wait
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    threading.Thread(target=press_ctrl_c).start()
    with pytest.raises(KeyboardInterrupt):
        writer.drain()

    assert running.done() and running.exception() is not None  # stopped, and waited for
    assert queued.cancelled()  # never started
    assert writer.unfinished == []
    assert writer.submit(SaveFuture(3, "d"), lambda c: _info(3), lambda: None).result().step == 3


def test_a_cancelled_commit_stops_before_its_commit_point_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CheckpointWriteError) as caught:
        data = np.ones(1000).view(np.uint8).data
        commit_checkpoint(
            tmp_path, "ckpt", 7, [TensorSource("w", "F64", (1000,), data)], {}, {}, cancel=cancel
        )
    assert caught.value.errno == errno.ECANCELED and caught.value.step == 7
    assert list(tmp_path.iterdir()) == [] and list_checkpoints(tmp_path) == []
