"""trainhooks: TensorFlow-style monitored training sessions, hooks and crash-safe checkpoints.

The public API is this one flat namespace; everything else lives in private modules.
Names are resolved on first use (PEP 562) so that ``import trainhooks`` stays cheap and
never imports torch, JAX or TensorBoard.
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
    "StateMismatchError": "trainhooks._exceptions",
    "NanLossDuringTrainingError": "trainhooks._exceptions",
    "ResumeDivergenceError": "trainhooks._exceptions",
    # checkpoint store
    "CheckpointInfo": "trainhooks._store._info",
    "list_checkpoints": "trainhooks._store._reader",
    "latest_checkpoint": "trainhooks._store._reader",
    "verify_checkpoint": "trainhooks._store._reader",
    "checkpoint_info": "trainhooks._store._reader",
    "prune_checkpoints": "trainhooks._store._retention",
    "export_safetensors": "trainhooks._store._export",
    # state and the saver
    "Saver": "trainhooks._saver",
    "load": "trainhooks._saver",
    "RNGState": "trainhooks._state._rng",
    # session and hook protocol
    "SessionRunHook": "trainhooks._session._hook",
    "SessionRunArgs": "trainhooks._session._hook",
    "SessionRunContext": "trainhooks._session._hook",
    "SessionRunValues": "trainhooks._session._hook",
    "SecondOrStepTimer": "trainhooks._session._timer",
    "MonitoredSession": "trainhooks._session._monitored",
    "SingularMonitoredSession": "trainhooks._session._monitored",
    "MonitoredTrainingSession": "trainhooks._session._monitored",
    # hooks
    "CheckpointSaverHook": "trainhooks._hooks._checkpoint_saver",
    "StopAtStepHook": "trainhooks._hooks._stop_at_step",
    "StepCounterHook": "trainhooks._hooks._step_counter",
    "LoggingTensorHook": "trainhooks._hooks._logging_tensor",
    "NanTensorHook": "trainhooks._hooks._nan_tensor",
    "SummarySaverHook": "trainhooks._hooks._summary_saver",
    "FinalOpsHook": "trainhooks._hooks._final_ops",
    "GlobalStepWaiterHook": "trainhooks._hooks._global_step_waiter",
    "StepArgsHook": "trainhooks._hooks._step_args",
    "ProfilerHook": "trainhooks._hooks._profiler",
    "ResumeCheckHook": "trainhooks._hooks._resume_check",
    # listeners
    "CheckpointSaverListener": "trainhooks._listeners._base",
    "EvaluationListener": "trainhooks._listeners._evaluation",
    "BestCheckpointExporter": "trainhooks._listeners._best_exporter",
    "EarlyStoppingListener": "trainhooks._listeners._early_stopping",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'trainhooks' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # static analysers and IDEs see ordinary imports
    from trainhooks._exceptions import *  # noqa: F403
