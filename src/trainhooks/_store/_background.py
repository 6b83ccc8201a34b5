"""Committing checkpoints in the background: one worker thread, saves in order, futures.

``Saver.save_async`` snapshots the state on the training thread and hands the commit (the
write, the checksums, the fsyncs, the rename, retention) to a :class:`BackgroundWriter`;
the caller gets a :class:`SaveFuture` that resolves only once the checkpoint is durable.

Decisions, and why:

- **A thread, not a process.** The background work is ``os.write``, ``fsync`` and crc32c,
  and all three release the GIL; the Python between them is one call per 64 MiB written
  (with 8 MiB calls, a write beside a pure-Python training step took 3.5x as long as
  beside an idle one, with 64 MiB calls 2x: each call takes the GIL back from it). A
  process would need the snapshot in shared memory or a second copy, and a spawn per
  saver, and the write's CPU would still compete with training for the same cores
  (measured: ``benchmarks/async_save.py``, docs/performance.md).
- **Saves run one after another, in the order submitted**, so retention sees the steps in
  the order the training thread produced them, and at most ``max_pending`` snapshots are
  alive: :meth:`BackgroundWriter.wait_for_slot` blocks the training thread (and logs how
  long) instead of taking more memory.
- **One worker thread per writer, started at its first save and kept** until the writer
  is closed or dropped: starting a thread per save cost about 1.5 ms of the training
  thread's time on this VM (the start waits for the new thread to be scheduled), a
  quarter of the copy of a 64 MiB state. It is a daemon thread, so a forgotten saver
  never keeps the interpreter alive, and an exit hook waits for the saves still in
  flight, so an interpreter that exits with one finishes it instead of tearing it.
- **Ctrl-C while waiting cancels**, like Ctrl-C during a synchronous save: the in-flight
  save stops before its commit point and removes its staging directory, the wait goes on
  until that is done, then ``KeyboardInterrupt`` propagates. Nothing half-written is left.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, wait
from pathlib import Path
from typing import Any

from trainhooks._store._info import CheckpointInfo
from trainhooks._store._remote._url import ObjectPath

__all__ = ["BackgroundWriter", "SaveFuture", "unfinished_saves_into", "wait_for"]

_LOG = logging.getLogger("trainhooks")


class SaveFuture(Future[CheckpointInfo]):
    """A checkpoint being saved in the background (a ``concurrent.futures.Future``).

    ``result()`` waits until the checkpoint of ``step`` in ``directory`` is durable and
    returns its ``CheckpointInfo``, or raises the save's own typed error (a
    ``CheckpointWriteError`` with errno, path and step, ...); ``done()`` tells without
    waiting. Nothing of a failed save is left on disk, and no committed checkpoint is
    touched by it.
    """

    def __init__(self, step: int, directory: str | os.PathLike[str]) -> None:
        super().__init__()
        self.step = step
        self.directory = directory if isinstance(directory, ObjectPath) else Path(directory)
        self._writer: weakref.ref[BackgroundWriter] | None = None  # set when submitted

    def __repr__(self) -> str:
        return f"<SaveFuture step={self.step} {self.directory} {self._state.lower()}>"


Job = Callable[[threading.Event], CheckpointInfo]  # the commit; gets the cancel event
_Item = tuple[SaveFuture, Job, Callable[[], None]]


class BackgroundWriter:
    """Runs save jobs on one worker thread, in order, at most ``max_pending`` unfinished.

    Used from one thread (the training thread); the worker only runs the jobs.
    """

    def __init__(self, max_pending: int = 1) -> None:
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be a positive int, got {max_pending!r}")
        self.max_pending = max_pending
        self._cancel = threading.Event()
        self._jobs: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()  # None: stop
        self._thread: threading.Thread | None = None
        self._unfinished: deque[SaveFuture] = deque()  # submitted, oldest first
        weakref.finalize(self, self._jobs.put, None)  # dropped unclosed: the worker ends

    @property
    def unfinished(self) -> list[SaveFuture]:
        """The saves submitted and not yet finished, oldest first."""
        self._forget_finished()
        return list(self._unfinished)

    def wait_for_slot(self, step: int) -> float:
        """Block until a save at ``step`` may start: fewer than ``max_pending`` unfinished.

        Returns the seconds waited; a wait is logged with its duration, since it means
        saves are due faster than the disk writes them.
        """
        self._forget_finished()
        if len(self._unfinished) < self.max_pending:
            return 0.0
        started = time.monotonic()
        oldest = self._unfinished[0]
        self._wait_for([oldest])
        waited = time.monotonic() - started
        _LOG.info(
            "the save of step %d waited %.3f s for the save of step %d to finish writing "
            "(max_pending=%d): saves are due faster than the disk writes them",
            step,
            waited,
            oldest.step,
            self.max_pending,
        )
        self._forget_finished()
        return waited

    def submit(self, future: SaveFuture, job: Job, on_finished: Callable[[], None]) -> SaveFuture:
        """Queue ``job``; ``on_finished`` runs on the worker right before ``future``
        resolves (so memory the job used is free when a waiter wakes up)."""
        future._writer = weakref.ref(self)
        self._unfinished.append(future)
        self._jobs.put((future, job, on_finished))
        if self._thread is None or not self._thread.is_alive():  # (not alive: after a fork)
            self._thread = threading.Thread(
                target=_work, args=(self._jobs, self._cancel), name="trainhooks-save", daemon=True
            )
            self._thread.start()
            _live_writers.add(self)
            _finish_saves_at_exit.register()
        return future

    def close(self) -> None:
        """Wait for every submitted save, then end the worker thread (the next
        :meth:`submit` starts a new one)."""
        self.drain()
        thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join()

    def drain(self) -> None:
        """Wait for every submitted save to finish (successfully or not)."""
        self._wait_for(list(self._unfinished))
        self._unfinished.clear()

    def cancel_unfinished(self) -> None:
        """Stop every unfinished save before its commit point (one not started never
        starts) and wait until they have stopped; their futures raise ``ECANCELED``."""
        pending = list(self._unfinished)
        self._cancel.set()
        for future in pending:
            future.cancel()
        _wait_through_interrupts(pending)
        self._cancel.clear()
        self._unfinished.clear()

    # -- internals ------------------------------------------------------------------

    def _wait_for(self, futures: list[SaveFuture]) -> None:
        wait_for(futures)

    def _forget_finished(self) -> None:
        while self._unfinished and self._unfinished[0].done():
            self._unfinished.popleft()


_live_writers: weakref.WeakSet[BackgroundWriter] = weakref.WeakSet()


def _work(jobs: queue.SimpleQueue[_Item | None], cancel: threading.Event) -> None:
    """The worker thread: run each job, resolve its future; end at ``None``. It holds no
    reference to its writer, so a writer dropped unclosed can be collected (and stop it)."""
    while True:
        item = jobs.get()
        if item is None:
            return
        future, job, on_finished = item
        del item
        if not future.set_running_or_notify_cancel():
            on_finished()
            continue
        try:
            info = job(cancel)
        except BaseException as exc:  # reported through the future, typed as raised
            on_finished()
            future.set_exception(exc)
        else:
            on_finished()
            future.set_result(info)
        del future, job, on_finished  # an idle worker keeps no snapshot alive


class _ExitHook:
    """At exit, wait for the saves still in flight: daemon threads would otherwise be
    stopped mid-write, leaving a staging directory for the next writer. Registered at the
    first worker's start, after the finalizers of directory locks exist, so that it runs
    before them (``atexit`` runs the newest first) and the lock is held until the end."""

    registered = False

    def register(self) -> None:
        if not self.registered:
            self.registered = True
            atexit.register(self)

    def __call__(self) -> None:
        for writer in list(_live_writers):
            unfinished = list(writer._unfinished)
            wait(unfinished)
            for future in unfinished:
                if not future.cancelled() and future.exception() is not None:
                    _LOG.error(
                        "the background save of step %d into %s, finished at exit, failed: %s",
                        future.step,
                        future.directory,
                        future.exception(),
                    )


_finish_saves_at_exit = _ExitHook()


def unfinished_saves_into(directory: Path | ObjectPath) -> list[SaveFuture]:
    """The background saves of this process, by any saver, still writing into
    ``directory`` (a restore from it waits for them, so it sees what was saved)."""
    place = _place(directory)
    return [
        future
        for writer in list(_live_writers)
        for future in list(writer._unfinished)
        if not future.done() and _place(future.directory) == place
    ]


def _place(directory: Path | ObjectPath) -> tuple[bool, str]:
    if isinstance(directory, ObjectPath):
        return True, str(directory)
    return False, str(directory.absolute())


def wait_for(futures: Iterable[Future[Any]]) -> None:
    """Wait until ``futures`` are done. Ctrl-C meanwhile cancels the background saves of
    their writers cleanly, waits until those have stopped, then raises
    ``KeyboardInterrupt`` (call from the thread that submits the saves)."""
    futures = list(futures)
    try:
        wait(futures)
    except KeyboardInterrupt:
        writers = {}
        for future in futures:
            writer = future._writer() if isinstance(future, SaveFuture) and future._writer else None
            if writer is not None:
                writers[id(writer)] = writer
        for writer in writers.values():
            writer.cancel_unfinished()
        _wait_through_interrupts(futures)
        raise


def _wait_through_interrupts(futures: Sequence[Future[Any]]) -> None:
    """Wait, ignoring further Ctrl-C: a cancelled save stops within one chunk."""
    while True:
        try:
            wait(futures)
            return
        except KeyboardInterrupt:
            continue
