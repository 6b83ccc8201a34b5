"""The one exception hierarchy of trainhooks.

Every error the library raises on purpose derives from :class:`TrainhooksError`::

    TrainhooksError
    ├── CheckpointError                  anything about checkpoint files
    │   ├── CheckpointCorruptError       bytes on disk fail validation or checksum
    │   ├── CheckpointWriteError         a save could not be made durable (errno kept)
    │   ├── CheckpointNotFoundError      no (valid) checkpoint where one was asked for
    │   ├── CheckpointLockedError        another writer holds the directory
    │   ├── CheckpointFormatError        an unsupported format version or value type
    │   ├── CheckpointTimeoutError       a collective save or load lost a peer (died or
    │   │                                stalled past the timeout); names rank and collective
    │   └── StateMismatchError           checkpoint and target state disagree (shape, dtype, keys)
    ├── NanLossDuringTrainingError       raised by ``NanTensorHook`` (also when it gives up
    │                                    rolling back: ``steps`` names the bad steps)
    ├── ResumeDivergenceError            a resumed run re-ran a step differently
    ├── DistributedRecoveryError         a recovery or rollback one rank of a
    │                                    torch.distributed job cannot make with the others
    └── RollbackRequested                raised by a hook's ``after_run`` to undo the step
                                         (the session handles it; see docs/preemption.md)

Not an error, and so outside the tree: ``Preempted``, the ``SystemExit`` (status
``EXIT_PREEMPTED``) a session raises once it has saved and ended after a preemption
signal, so that a job script exits with a status its scheduler can requeue.

An exception raised by a user's hook or listener is not wrapped: it propagates with its
own type (TF users catch their own errors), carrying a PEP 678 note that names the
listener and the step.

Messages name the path, the step and the cause, and say what to do where that helps.
"""

from __future__ import annotations

import os
import pickle

__all__ = [
    "EXIT_PREEMPTED",
    "CheckpointCorruptError",
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointLockedError",
    "CheckpointNotFoundError",
    "CheckpointTimeoutError",
    "CheckpointWriteError",
    "DistributedRecoveryError",
    "NanLossDuringTrainingError",
    "Preempted",
    "ResumeDivergenceError",
    "RollbackRequested",
    "StateMismatchError",
    "TrainhooksError",
]

# sysexits.h's EX_TEMPFAIL, "temporary failure, retry later": docs/preemption.md says why.
EXIT_PREEMPTED = 75


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


class CheckpointTimeoutError(CheckpointError):
    """A collective save or load could not finish on every rank: a peer process died (its
    connection closed) or did not reach the collective within ``timeout`` seconds.

    Raised on every surviving rank instead of waiting forever. ``rank`` is the rank that
    raised it, ``collective`` the exchange it was in (``"plan"``, ``"write"``, ...).
    ``committed`` says whether the save's checkpoint reached its commit point: True or
    False where this rank knows it (the coordinator), None where it cannot (the checkpoint
    may or may not be committed: ``latest_checkpoint`` tells once the job is restarted).
    The process group is unusable afterwards: end the job and relaunch it.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        step: int | None = None,
        rank: int | None = None,
        collective: str | None = None,
        timeout: float | None = None,
        committed: bool | None = None,
    ) -> None:
        super().__init__(message, path=path, step=step)
        self.rank = rank
        self.collective = collective
        self.timeout = timeout
        self.committed = committed


class StateMismatchError(CheckpointError):
    """The checkpoint does not fit the state it is restored into (keys, shape or dtype)."""


class NanLossDuringTrainingError(TrainhooksError):
    """The loss became NaN or infinite (raised by ``NanTensorHook``).

    ``steps`` holds the global steps whose loss was bad (in rollback mode: every bad step
    of the window that made the hook give up).
    """

    def __init__(self, message: str, *, steps: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.steps = steps


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


class DistributedRecoveryError(TrainhooksError):
    """A recovery a rank of a ``torch.distributed`` session cannot make in step with the others.

    A recoverable error raised where the other ranks are not at the same point (the step
    function, a hook between sync points: they may be inside a collective of the step that
    this rank never joins), or a rollback still unagreed when the session closes. ``rank``
    is the rank raising it, ``step`` the global step; the original error is its
    ``__cause__``. The job must fail: a relaunch resumes every rank from the last
    checkpoint (docs/distributed.md).
    """

    def __init__(self, message: str, *, rank: int, step: int) -> None:
        super().__init__(message)
        self.rank = rank
        self.step = step


class RollbackRequested(TrainhooksError):
    """Raised by a hook's ``after_run`` to undo the step that just ran.

    The session stops calling the remaining hooks' ``after_run`` for that step, restores
    ``state`` from the checkpoint at ``step`` in its ``checkpoint_dir``, adds
    ``skip_steps`` to the steps whose runs it skips from then on, and re-creates itself
    (every hook's ``after_create_session``, so listeners see a restore); ``run`` then
    returns the undone step's result. ``reason`` is logged. Raised anywhere else, it
    propagates like any error.
    """

    def __init__(self, step: int, skip_steps: tuple[int, ...], reason: str) -> None:
        super().__init__(
            f"roll back to the checkpoint at step {step} and skip steps {list(skip_steps)}: "
            f"{reason}"
        )
        self.step = step
        self.skip_steps = skip_steps
        self.reason = reason


class Preempted(SystemExit):
    """The session saved, ended and stopped because a preemption was requested.

    A ``SystemExit`` whose ``code`` is ``EXIT_PREEMPTED`` (75): a script that does not
    catch it exits with that status, which a scheduler can be told to requeue; code after
    the ``with`` block, which would treat the run as finished, does not run. ``step`` is
    the global step saved; ``signal_number`` the signal that asked (None when
    ``request_preemption()`` did).
    """

    def __init__(self, step: int, signal_number: int | None) -> None:
        super().__init__(EXIT_PREEMPTED)
        self.step = step
        self.signal_number = signal_number


def portable_error(error: BaseException) -> BaseException | str:
    """``error`` if it survives a pickle round trip, so it can be sent to other ranks in
    memory (never to disk); else its text. Not exported: the ranks' collectives use it."""
    try:
        copy = pickle.loads(pickle.dumps(error))
    except Exception:
        return f"{type(error).__name__}: {error}"
    return error if type(copy) is type(error) else f"{type(error).__name__}: {error}"
