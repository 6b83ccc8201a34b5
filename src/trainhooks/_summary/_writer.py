"""A small TensorBoard scalar writer on top of the ``tensorboard`` package's own event writer.

Why not ``torch.utils.tensorboard``: it drags torch into hooks that must work for NumPy
and JAX steps. Why not our own TFRecord code: the ``tensorboard`` package's
``EventFileWriter`` is the reference implementation, maintained with the reader.

Several hooks and listeners often write to the same directory (the summary saver, the
step counter). TensorBoard reads the event files of one directory one after the other and
may skip late events of an older file, so, like TF's ``FileWriterCache``, every writer for
one directory shares a single event file; it is closed when its last user closes.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ScalarWriter",
    "import_tensorboard_writer",
    "require_tensorboard",
    "tensorboard_available",
]

_INSTALL_HINT = (
    "TensorBoard summaries need the 'tensorboard' package; install it with "
    "`pip install 'trainhooks[tensorboard]'` (or `pip install tensorboard`), or pass no "
    "output_dir to turn summaries off"
)


def import_tensorboard_writer() -> tuple[Any, Any, Any]:
    """Import ``(EventFileWriter, event_pb2, summary_pb2)`` lazily, with a helpful error."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return EventFileWriter, event_pb2, summary_pb2


def require_tensorboard() -> None:
    """Fail early, without importing it, when the ``tensorboard`` package is not installed.

    Hooks call this in their constructor so that a missing extra is reported where the
    hook is created (``MonitoredTrainingSession`` then leaves summaries out with a warning)
    rather than when the session begins.
    """
    if importlib.util.find_spec("tensorboard") is None:
        raise ImportError(_INSTALL_HINT)


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package can be imported (imports it if so)."""
    try:
        import_tensorboard_writer()
    except ImportError:
        return False
    return True


class _SharedEventFile:
    """One open event file for one directory, with a count of its users."""

    def __init__(self, logdir: str) -> None:
        event_file_writer, self.event_pb2, self.summary_pb2 = import_tensorboard_writer()
        self.writer = event_file_writer(logdir, max_queue_size=100, flush_secs=10)
        self.users = 0


_OPEN: dict[str, _SharedEventFile] = {}
_OPEN_LOCK = threading.Lock()


class ScalarWriter:
    """Writes scalar summaries (tag, value, step) to TensorBoard event files in ``logdir``.

    Creating one opens (or shares) the directory's event file; ``close()`` releases it.
    Also a context manager.
    """

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        self.logdir = Path(logdir)
        self._key = os.path.realpath(self.logdir)
        with _OPEN_LOCK:
            shared = _OPEN.get(self._key)
            if shared is None:
                shared = _OPEN[self._key] = _SharedEventFile(self._key)
            shared.users += 1
        self._shared: _SharedEventFile | None = shared

    def add_scalar(self, tag: str, value: float, step: int, wall_time: float | None = None) -> None:
        """Write one scalar at ``step``."""
        self.add_scalars({tag: value}, step, wall_time)

    def add_scalars(
        self, values: Mapping[str, float], step: int, wall_time: float | None = None
    ) -> None:
        """Write several scalars at ``step`` as one event (nothing when ``values`` is empty)."""
        if not values:
            return
        shared = self._require_open()
        summary = shared.summary_pb2.Summary(
            value=[
                shared.summary_pb2.Summary.Value(tag=str(tag), simple_value=float(value))
                for tag, value in values.items()
            ]
        )
        event = shared.event_pb2.Event(
            wall_time=time.time() if wall_time is None else wall_time,
            step=int(step),
            summary=summary,
        )
        shared.writer.add_event(event)

    def add_session_start(self, step: int) -> None:
        """Mark that a (re)started run writes from ``step`` on.

        TensorBoard drops the events at ``step`` and later that an earlier, crashed run
        left behind, so a resumed run's curves do not double back (TF's summary saver
        writes the same ``SessionLog.START``).
        """
        shared = self._require_open()
        session_log = shared.event_pb2.SessionLog(status=shared.event_pb2.SessionLog.START)
        event = shared.event_pb2.Event(
            wall_time=time.time(), step=int(step), session_log=session_log
        )
        shared.writer.add_event(event)

    def flush(self) -> None:
        """Write every pending event to disk (blocks until done)."""
        self._require_open().writer.flush()

    def close(self) -> None:
        """Flush and release the event file; the last user closes it. Idempotent."""
        shared, self._shared = self._shared, None
        if shared is None:
            return
        with _OPEN_LOCK:
            shared.users -= 1
            last = shared.users == 0
            if last:
                del _OPEN[self._key]
        if last:
            shared.writer.close()
        else:
            shared.writer.flush()

    def _require_open(self) -> _SharedEventFile:
        if self._shared is None:
            raise ValueError(f"the summary writer for {self.logdir} is closed")
        return self._shared

    def __enter__(self) -> ScalarWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
