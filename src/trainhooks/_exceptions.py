"""The one exception hierarchy of trainhooks.

Every error the library raises on purpose derives from :class:`TrainhooksError`::

    TrainhooksError
    ├── CheckpointError                  anything about checkpoint files
    │   ├── CheckpointCorruptError       bytes on disk fail validation or checksum
    │   ├── CheckpointWriteError         a save could not be made durable (errno kept)
    │   ├── CheckpointNotFoundError      no (valid) checkpoint where one was asked for
    │   ├── CheckpointLockedError        another writer holds the directory
    │   ├── CheckpointFormatError        an unsupported format version or value type
    │   └── StateMismatchError           checkpoint and target state disagree (shape, dtype, keys)
    ├── NanLossDuringTrainingError       raised by ``NanTensorHook``
    └── ResumeDivergenceError            a resumed run re-ran a step differently

An exception raised by a user's hook or listener is not wrapped: it propagates with its
own type (TF users catch their own errors), carrying a PEP 678 note that names the
listener and the step.

Messages name the path, the step and the cause, and say what to do where that helps.
"""

from __future__ import annotations

import os

__all__ = [
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointLockedError",
    "CheckpointNotFoundError",
    "CheckpointWriteError",
    "NanLossDuringTrainingError",
    "ResumeDivergenceError",
    "StateMismatchError",
    "TrainhooksError",
]


class TrainhooksError(Exception):
    """Base class of every error trainhooks raises on purpose."""


class CheckpointError(TrainhooksError):
    """A checkpoint could not be written, found, read or trusted.

    ``path`` and ``step`` are kept as attributes (``None`` where unknown) so callers
    can act on them without parsing the message.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        step: int | None = None,
    ) -> None:
        super().__init__(message)
        self.path = os.fspath(path) if path is not None else None
        self.step = step


class CheckpointCorruptError(CheckpointError):
    """The bytes of a committed checkpoint fail validation or their checksum.

    ``file``, ``tensor`` and ``byte_range`` say where, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        step: int | None = None,
        file: str | None = None,
        tensor: str | None = None,
        byte_range: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(message, path=path, step=step)
        self.file = file
        self.tensor = tensor
        self.byte_range = byte_range


class CheckpointWriteError(CheckpointError):
    """A save (or a deletion) failed; nothing committed before it was touched.

    ``errno`` holds the operating system's error number when the cause was an OSError.
    ``committed`` is True in the one case where the new checkpoint did reach its commit
    point but was not yet confirmed durable (the parent directory's fsync failed).
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        step: int | None = None,
        errno: int | None = None,
        committed: bool = False,
    ) -> None:
        super().__init__(message, path=path, step=step)
        self.errno = errno
        self.committed = committed


class CheckpointNotFoundError(CheckpointError):
    """No checkpoint (or no valid one) exists where one was asked for."""


class CheckpointLockedError(CheckpointError):
    """Another live writer holds the directory's lock; two writers would race."""


class CheckpointFormatError(CheckpointError):
    """A value cannot be stored, or a checkpoint uses a format this version does not know."""


class StateMismatchError(CheckpointError):
    """The checkpoint does not fit the state it is restored into (keys, shape or dtype)."""


class NanLossDuringTrainingError(TrainhooksError):
    """The loss became NaN or infinite (raised by ``NanTensorHook``)."""


class ResumeDivergenceError(TrainhooksError):
    """A step re-run after a restore returned other values than before the crash.

    Raised by ``ResumeCheckHook(on_divergence="raise")``. ``step`` is the re-run step,
    ``checkpoint_step`` the step restored, ``name`` the returned value that differs
    (``""`` for a bare number) and ``recorded`` / ``observed`` its two values (``None``
    when only one run returned that name).
    """

    def __init__(
        self,
        message: str,
        *,
        step: int,
        checkpoint_step: int,
        name: str,
        recorded: float | None,
        observed: float | None,
    ) -> None:
        super().__init__(message)
        self.step = step
        self.checkpoint_step = checkpoint_step
        self.name = name
        self.recorded = recorded
        self.observed = observed
