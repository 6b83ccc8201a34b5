"""trainhooks: TensorFlow-style monitored training sessions, hooks and crash-safe checkpoints.

The public API is this one flat namespace; everything else lives in private modules.
Names are resolved on first use (PEP 562) so that ``import trainhooks`` stays cheap and
never imports torch, JAX or TensorBoard. Type checkers read the same names from explicit
imports under ``TYPE_CHECKING`` (the package ships ``py.typed``), so users' code is
checked against the real signatures.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> private module that defines it
_PUBLIC: dict[str, str] = {
    # errors
    "TrainhooksError": "trainhooks._exceptions",
    "CheckpointError": "trainhooks._exceptions",
    "CheckpointCorruptError": "trainhooks._exceptions",
    "CheckpointWriteError": "trainhooks._exceptions",
    "CheckpointNotFoundError": "trainhooks._exceptions",
    "CheckpointLockedError": "trainhooks._exceptions",
    "CheckpointFormatError": "trainhooks._exceptions",
    "CheckpointTimeoutError": "trainhooks._exceptions",
    "StateMismatchError": "trainhooks._exceptions",
    "NanLossDuringTrainingError": "trainhooks._exceptions",
    "ResumeDivergenceError": "trainhooks._exceptions",
    "DistributedRecoveryError": "trainhooks._exceptions",
    "RollbackRequested": "trainhooks._exceptions",
    # preemption: the exit a preempted session raises, and its status
    "Preempted": "trainhooks._exceptions",
    "EXIT_PREEMPTED": "trainhooks._exceptions",
    # checkpoint store
    "CheckpointInfo": "trainhooks._store._info",
    "list_checkpoints": "trainhooks._store._listing",
    "latest_checkpoint": "trainhooks._store._listing",
    "verify_checkpoint": "trainhooks._store._reader",
    "checkpoint_info": "trainhooks._store._reader",
    "prune_checkpoints": "trainhooks._store._writer",
    "SaveFuture": "trainhooks._store._background",
    # state and the saver
    "Saver": "trainhooks._saver",
    "load": "trainhooks._saver",
    "export_safetensors": "trainhooks._saver",
    "RNGState": "trainhooks._state._rng",
    # session and hook protocol
    "HookSession": "trainhooks._session._hook",
    "SessionRunHook": "trainhooks._session._hook",
    "SessionRunArgs": "trainhooks._session._hook",
    "SessionRunContext": "trainhooks._session._hook",
    "SessionRunValues": "trainhooks._session._hook",
    "SecondOrStepTimer": "trainhooks._session._timer",
    "MonitoredSession": "trainhooks._session._monitored",
    "SingularMonitoredSession": "trainhooks._session._monitored",
    "MonitoredTrainingSession": "trainhooks._training._factory",
    "StepContext": "trainhooks._session._step_context",
    # hooks
    "CheckpointSaverHook": "trainhooks._hooks._checkpoint_saver",
    "SupportsSave": "trainhooks._hooks._checkpoint_saver",
    "StopAtStepHook": "trainhooks._hooks._stop_at_step",
    "StepCounterHook": "trainhooks._hooks._step_counter",
    "LoggingTensorHook": "trainhooks._hooks._logging_tensor",
    "NanTensorHook": "trainhooks._hooks._nan_tensor",
    "SummarySaverHook": "trainhooks._hooks._summary_saver",
    "SupportsAddScalar": "trainhooks._hooks._summary_saver",
    "FinalOpsHook": "trainhooks._hooks._final_ops",
    "GlobalStepWaiterHook": "trainhooks._hooks._global_step_waiter",
    "StepArgsHook": "trainhooks._hooks._step_args",
    "FeedFnHook": "trainhooks._hooks._step_args",
    "ProfilerHook": "trainhooks._hooks._profiler",
    "ResumeCheckHook": "trainhooks._hooks._resume_check",
    # listeners
    "CheckpointSaverListener": "trainhooks._listeners._base",
    "EvaluationListener": "trainhooks._listeners._evaluation",
    "BestCheckpointExporter": "trainhooks._listeners._best_exporter",
    "BestExport": "trainhooks._listeners._best_exporter",
    "EarlyStoppingListener": "trainhooks._listeners._early_stopping",
}

__all__ = sorted(_PUBLIC)

if TYPE_CHECKING:
    # What type checkers and IDEs see: every public name, imported explicitly (``X as X``
    # marks a re-export). At run time the same names resolve lazily through ``__getattr__``;
    # tests/test_public_api.py proves both views list the same names. (The block keeps the
    # table's order; isort would split each ``X as X`` into its own statement.)
    from trainhooks._exceptions import (  # noqa: I001
        TrainhooksError as TrainhooksError,
        CheckpointError as CheckpointError,
        CheckpointCorruptError as CheckpointCorruptError,
        CheckpointWriteError as CheckpointWriteError,
        CheckpointNotFoundError as CheckpointNotFoundError,
        CheckpointLockedError as CheckpointLockedError,
        CheckpointFormatError as CheckpointFormatError,
        CheckpointTimeoutError as CheckpointTimeoutError,
        StateMismatchError as StateMismatchError,
        NanLossDuringTrainingError as NanLossDuringTrainingError,
        ResumeDivergenceError as ResumeDivergenceError,
        DistributedRecoveryError as DistributedRecoveryError,
        RollbackRequested as RollbackRequested,
        Preempted as Preempted,
        EXIT_PREEMPTED as EXIT_PREEMPTED,
    )
    from trainhooks._store._info import (
        CheckpointInfo as CheckpointInfo,
    )
    from trainhooks._store._listing import (
        list_checkpoints as list_checkpoints,
        latest_checkpoint as latest_checkpoint,
    )
    from trainhooks._store._reader import (
        verify_checkpoint as verify_checkpoint,
        checkpoint_info as checkpoint_info,
    )
    from trainhooks._store._writer import (
        prune_checkpoints as prune_checkpoints,
    )
    from trainhooks._store._background import (
        SaveFuture as SaveFuture,
    )
    from trainhooks._saver import (
        Saver as Saver,
        load as load,
        export_safetensors as export_safetensors,
    )
    from trainhooks._state._rng import (
        RNGState as RNGState,
    )
    from trainhooks._session._hook import (
        HookSession as HookSession,
        SessionRunHook as SessionRunHook,
        SessionRunArgs as SessionRunArgs,
        SessionRunContext as SessionRunContext,
        SessionRunValues as SessionRunValues,
    )
    from trainhooks._session._timer import (
        SecondOrStepTimer as SecondOrStepTimer,
    )
    from trainhooks._session._monitored import (
        MonitoredSession as MonitoredSession,
        SingularMonitoredSession as SingularMonitoredSession,
    )
    from trainhooks._training._factory import (
        MonitoredTrainingSession as MonitoredTrainingSession,
    )
    from trainhooks._session._step_context import (
        StepContext as StepContext,
    )
    from trainhooks._hooks._checkpoint_saver import (
        CheckpointSaverHook as CheckpointSaverHook,
        SupportsSave as SupportsSave,
    )
    from trainhooks._hooks._resume_check import (
        ResumeCheckHook as ResumeCheckHook,
    )
    from trainhooks._hooks._stop_at_step import (
        StopAtStepHook as StopAtStepHook,
    )
    from trainhooks._hooks._step_counter import (
        StepCounterHook as StepCounterHook,
    )
    from trainhooks._hooks._logging_tensor import (
        LoggingTensorHook as LoggingTensorHook,
    )
    from trainhooks._hooks._nan_tensor import (
        NanTensorHook as NanTensorHook,
    )
    from trainhooks._hooks._summary_saver import (
        SummarySaverHook as SummarySaverHook,
        SupportsAddScalar as SupportsAddScalar,
    )
    from trainhooks._hooks._final_ops import (
        FinalOpsHook as FinalOpsHook,
    )
    from trainhooks._hooks._global_step_waiter import (
        GlobalStepWaiterHook as GlobalStepWaiterHook,
    )
    from trainhooks._hooks._step_args import (
        StepArgsHook as StepArgsHook,
        FeedFnHook as FeedFnHook,
    )
    from trainhooks._hooks._profiler import (
        ProfilerHook as ProfilerHook,
    )
    from trainhooks._listeners._base import (
        CheckpointSaverListener as CheckpointSaverListener,
    )
    from trainhooks._listeners._evaluation import (
        EvaluationListener as EvaluationListener,
    )
    from trainhooks._listeners._best_exporter import (
        BestCheckpointExporter as BestCheckpointExporter,
        BestExport as BestExport,
    )
    from trainhooks._listeners._early_stopping import (
        EarlyStoppingListener as EarlyStoppingListener,
    )
else:
    # Hidden from checkers so that a misspelt name is an error there, not ``Any``.

    def __getattr__(name: str) -> Any:
        module = _PUBLIC.get(name)
        if module is None:
            raise AttributeError(f"module 'trainhooks' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # cache: later look-ups skip this function
        return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
