"""Staging: the host buffers a state's arrays are copied into for a background save.

A background save writes a snapshot while training goes on, so every array is copied first
(by its framework's adapter, ``ArrayAdapter.stage``). The buffers are kept, one per array
name, and filled again at the next snapshot: on this project's VM the first touch of fresh
memory costs 1-3.5 s/GiB, ten to fifty times the copy itself, so a snapshot into buffers
that already exist is what keeps the training thread's stall near a plain memory copy. The
peak extra memory is one copy of the state's arrays per snapshot in flight.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainhooks._state._adapters._base import ArrayAdapter, ArrayBytes

__all__ = ["StagingBuffers"]


class StagingBuffers:
    """The buffers of one snapshot in flight, kept for the next snapshot they can serve.

    Between :meth:`begin` and :meth:`finish` (or :meth:`abort`) the encoder stages each
    array under its unique name; an array whose shape or dtype changed gets a new buffer
    and its old one is dropped, and the buffers of arrays gone from the state are freed at
    :meth:`finish`. One instance serves one snapshot at a time.
    """

    def __init__(self) -> None:
        self._kept: dict[str, Any] = {}  # name -> buffer, from the last snapshot
        self._used: dict[str, Any] = {}  # name -> buffer, in the snapshot being taken
        self._ready: list[Callable[[], None]] = []

    @property
    def nbytes(self) -> int:
        """Bytes held in buffers (kept between saves, so reported for the memory budget)."""
        return sum(int(buffer.nbytes) for buffer in self._kept.values())

    def begin(self) -> None:
        self._used, self._ready = {}, []

    def stage(self, adapter: ArrayAdapter, value: Any, name: str, where: str) -> ArrayBytes:
        """Copy ``value`` into this snapshot's buffer for ``name``; its dtype, shape, bytes."""
        staged = adapter.stage(value, where, self._kept.pop(name, None))
        self._used[name] = staged.buffer
        if staged.ready is not None:
            self._ready.append(staged.ready)
        return staged.array

    def finish(self) -> Callable[[], None]:
        """End the snapshot; returns the wait for copies still landing (device to host)."""
        self._kept, self._used = self._used, {}
        ready, self._ready = self._ready, []
        return lambda: _run_all(ready)

    def abort(self) -> None:
        """The snapshot failed half-way: keep every buffer for next time, staged or not."""
        self._kept.update(self._used)
        self._used, self._ready = {}, []


def _run_all(waits: list[Callable[[], None]]) -> None:
    for wait in waits:
        wait()
