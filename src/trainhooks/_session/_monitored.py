"""``SingularMonitoredSession``: a ``MonitoredSession`` without recovery, with TF's arguments.

``MonitoredSession`` itself (the per-step machinery) lives in ``_core.py``.
``MonitoredTrainingSession``, the factory that installs the standard hooks, lives a layer
up, in ``trainhooks._training``: it must know the hooks, and the session must not.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, MutableMapping
from typing import Any

from trainhooks._session._core import MonitoredSession, StepContext

__all__ = ["MonitoredSession", "SingularMonitoredSession", "StepContext"]


class SingularMonitoredSession(MonitoredSession):
    """A ``MonitoredSession`` without error recovery, with TF's argument list.

    ``scaffold``, ``master``, ``config`` and ``stop_grace_period_secs`` are accepted and
    ignored (graph/cluster concepts); ``checkpoint_filename_with_path`` is not supported.
    """

    def __init__(
        self,
        hooks: Iterable[object] | None = None,
        scaffold: Any = None,
        master: str = "",
        config: Any = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        stop_grace_period_secs: float = 120,
        checkpoint_filename_with_path: str | None = None,
        *,
        state: MutableMapping[str, Any] | None = None,
        steps_per_run: int = 1,
    ) -> None:
        if checkpoint_filename_with_path is not None:
            raise NotImplementedError(
                "checkpoint_filename_with_path is not supported; pass checkpoint_dir= to "
                "restore the latest checkpoint, or call Saver().restore(state, dir, step=N) "
                "before creating the session"
            )
        super().__init__(
            hooks=hooks,
            state=state,
            checkpoint_dir=checkpoint_dir,
            steps_per_run=steps_per_run,
        )
