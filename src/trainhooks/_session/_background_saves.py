"""One rank's background collective saves in a distributed session (``async_save=True``).

The bookkeeping apart from the sync points that drive it (``_collective.py``): the saves the
chief's hooks asked for at this sync point, the saves in flight (the same list, in the same
order, on every rank, since each is one collective save), and which of them every rank
agreed are finished. A future is delivered (``after_save``, or its error raised) only
once marked here, at a sync point, so every rank acts on it at the same step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, MutableMapping
from concurrent.futures import Future, wait
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from weakref import WeakSet

if TYPE_CHECKING:
    from trainhooks._dist._session_sync import Collectives
    from trainhooks._store._info import CheckpointInfo
    from trainhooks._store._remote._url import ObjectPath

__all__ = ["BackgroundSaves"]

_LOG = logging.getLogger("trainhooks")


class _Request(NamedTuple):
    """A background save the chief's hook asked for, started at the second all-reduce."""

    future: Future[CheckpointInfo]
    state: MutableMapping[str, Any]
    directory: Path | ObjectPath
    step: int
    commit_with: Any
    storage_options: dict[str, Any] | None


class BackgroundSaves:
    """This rank's background saves: asked for, in flight (oldest first), delivered."""

    def __init__(self) -> None:
        self.requested: list[_Request] = []  # chief: asked for by its hooks at this point
        self.inflight: list[Future[CheckpointInfo]] = []
        self._delivered: WeakSet[Future[Any]] = WeakSet()  # agreed finished on every rank

    def request(
        self,
        state: MutableMapping[str, Any],
        directory: Path | ObjectPath,
        step: int,
        commit_with: Any,
        storage_options: dict[str, Any] | None,
    ) -> Future[CheckpointInfo]:
        """The chief's hook asks for a save; its future resolves once the save is done."""
        future: Future[CheckpointInfo] = Future()
        request = _Request(future, state, directory, step, commit_with, storage_options)
        self.requested.append(request)
        return future

    def done_now(self, info: CheckpointInfo) -> Future[CheckpointInfo]:
        """A future for a blocking save, delivered already."""
        future: Future[CheckpointInfo] = Future()
        future.set_result(info)
        self._delivered.add(future)
        return future

    def is_delivered(self, future: Future[Any]) -> bool:
        return future in self._delivered

    def finished(self) -> int:
        """How many saves in flight, from the oldest, are done on this rank."""
        count = 0
        for future in self.inflight:
            if not future.done():
                break
            count += 1
        return count

    def start(
        self,
        collectives: Collectives,
        count: int,
        requested: list[_Request],
        own_state: Callable[[], MutableMapping[str, Any]],
        step: int,
    ) -> Exception | None:
        """Copy this rank's state for the ``count`` saves the chief asked for and start them
        (every rank at the same point); ``requested`` is the chief's list, empty elsewhere.
        Returns the error of a copy that failed here: its save then joins the others' only
        to fail it on every rank with that error (the caller agrees on raising it)."""
        failure: Exception | None = None
        for index in range(count):
            ask = requested[index] if requested else None
            directory, at = (ask.directory, ask.step) if ask is not None else (Path("."), step)
            try:
                if failure is not None:
                    raise failure  # every later save of this point fails the same way
                if ask is None:
                    inner = collectives.save_async(own_state(), directory, at, chief=False)
                else:
                    inner = collectives.save_async(
                        ask.state,
                        ask.directory,
                        ask.step,
                        chief=True,
                        commit_with=ask.commit_with,
                        storage_options=ask.storage_options,
                    )
            except Exception as exc:
                failure = exc
                inner = collectives.refuse_async(exc, at, directory)
            if ask is None:
                self.inflight.append(inner)
            else:
                inner.add_done_callback(partial(_copy_outcome, ask.future))
                self.inflight.append(ask.future)
        return failure

    def deliver(self, count: int, step: int) -> None:
        """The ``count`` oldest saves, waited for: marked delivered (the chief's hook calls
        ``after_save``) or their error raised, the same on every rank."""
        done, self.inflight = self.inflight[:count], self.inflight[count:]
        if not all(future.done() for future in done):
            started = time.monotonic()
            wait(done)
            _LOG.info(
                "step %d waited %.3f s for the background checkpoint save in flight: saves "
                "are due faster than they are written",
                step,
                time.monotonic() - started,
            )
        for future in done:
            self._delivered.add(future)
        for future in done:
            future.result()

    def release(self) -> None:
        """Wait for the saves in flight (every rank joined them), logging a failure rather
        than raising over the session's outcome."""
        inflight, self.inflight = self.inflight, []
        for future in inflight:
            error = future.exception()
            if error is not None:
                _LOG.error("the background checkpoint save of a closing session failed: %s", error)


def _copy_outcome(outer: Future[CheckpointInfo], inner: Future[CheckpointInfo]) -> None:
    error = inner.exception()
    if error is not None:
        outer.set_exception(error)
    else:
        outer.set_result(inner.result())
