"""``ProfilerHook``: write a Chrome trace (``timeline-<step>.json``) of chosen steps."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from trainhooks._session._hook import (
    SessionRunArgs,
    SessionRunContext,
    SessionRunHook,
    SessionRunValues,
)
from trainhooks._session._timer import Clock, SecondOrStepTimer

__all__ = ["ProfilerHook"]

MAX_PYTHON_EVENTS = 500_000  # bounds the memory of one traced step


class _Tracer(Protocol):
    def stop(self) -> None: ...

    def stop_and_export(self, path: Path) -> None: ...


class ProfilerHook(SessionRunHook):
    """Traces one run every ``save_steps`` steps or ``save_secs`` seconds.

    Each traced run becomes ``output_dir/timeline-<global step>.json`` in the Chrome trace
    format (open it in ``chrome://tracing`` or https://ui.perfetto.dev). As in TF the very
    first run is never traced (it pays one-time warm-up costs), and exactly one of
    ``save_steps`` / ``save_secs`` is required.

    ``backend="auto"`` uses ``torch.profiler`` when torch is already imported (operator
    timings, and memory with ``show_memory=True``), else a pure-Python tracer built on
    ``sys.setprofile`` (the hook ``cProfile`` uses) that records every Python and C call of
    the traced run as a timeline: ``cProfile`` itself only keeps totals, which a trace
    viewer cannot draw. ``show_dataflow`` is TF's and has no meaning here. ``save_secs``
    are read from ``clock`` (default ``time.monotonic``; see ``SecondOrStepTimer``).
    """

    def __init__(
        self,
        save_steps: int | None = None,
        save_secs: float | None = None,
        output_dir: str | os.PathLike[str] = "",
        show_dataflow: bool = True,
        show_memory: bool = False,
        *,
        backend: str = "auto",
        clock: Clock | None = None,
    ) -> None:
        if (save_steps is None) == (save_secs is None):
            raise ValueError(
                "ProfilerHook needs exactly one of save_steps and save_secs "
                f"(got save_steps={save_steps!r}, save_secs={save_secs!r})"
            )
        if backend not in ("auto", "torch", "python"):
            raise ValueError(f"backend must be 'auto', 'torch' or 'python', got {backend!r}")
        self._timer = SecondOrStepTimer(save_secs, save_steps, clock=clock)
        self._output_dir = Path(output_dir)
        self._show_memory = show_memory
        self._backend = backend
        self._next_step: int | None = None
        self._tracer: _Tracer | None = None
        self.written: list[Path] = []

    def begin(self) -> None:
        self._output_dir.mkdir(parents=True, exist_ok=True)
        self._timer.reset()
        self._next_step = None
        self.written = []

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs | None:
        self.release()  # a tracer left by a step that raised (and was retried) stops here
        if self._next_step is not None and self._timer.should_trigger_for_step(self._next_step):
            self._tracer = self._start_tracer()
        return None

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        session = run_context.session
        global_step = session.global_step
        tracer, self._tracer = self._tracer, None
        if tracer is not None:
            self._timer.update_last_triggered_step(global_step)
            path = self._output_dir / f"timeline-{global_step}.json"
            tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
            try:
                tracer.stop_and_export(tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            self.written.append(path)
        self._next_step = global_step + session.steps_per_run

    def release(self) -> None:
        """Stop a trace left running when a traced step raised (the session calls this on
        every exit path): a forgotten ``sys.setprofile`` would slow all later code."""
        tracer, self._tracer = self._tracer, None
        if tracer is not None:
            tracer.stop()

    def _start_tracer(self) -> _Tracer:
        use_torch = self._backend == "torch" or (self._backend == "auto" and "torch" in sys.modules)
        if use_torch:
            return _TorchTracer(self._show_memory)
        return _PythonTracer()


class _TorchTracer:
    """``torch.profiler`` over one run (CPU, plus CUDA when available)."""

    def __init__(self, show_memory: bool) -> None:
        # torch is reached through its adapter, the one module that imports it
        from trainhooks._state._adapters._torch import start_profiler

        self._profile = start_profiler(show_memory)

    def stop(self) -> None:
        self._profile.stop()

    def stop_and_export(self, path: Path) -> None:
        self.stop()
        self._profile.export_chrome_trace(str(path))


class _PythonTracer:
    """Records the calls of the current thread as Chrome trace complete ("X") events."""

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []
        self._stack: list[tuple[str, int]] = []
        self._truncated = False
        self._tid = threading.get_ident()
        self._pid = os.getpid()
        self._previous = sys.getprofile()
        sys.setprofile(self._on_event)

    def _on_event(self, frame: FrameType, event: str, arg: Any) -> None:
        now = time.perf_counter_ns()
        if event == "call":
            code = frame.f_code
            name = f"{code.co_name} ({os.path.basename(code.co_filename)}:{code.co_firstlineno})"
            self._stack.append((name, now))
        elif event == "c_call":
            self._stack.append((getattr(arg, "__qualname__", None) or repr(arg), now))
        elif self._stack:  # a return; returns of frames entered before tracing are ignored
            name, start = self._stack.pop()
            self._record(name, start, now)

    def _record(self, name: str, start_ns: int, end_ns: int) -> None:
        if len(self._events) >= MAX_PYTHON_EVENTS:
            self._truncated = True
            return
        self._events.append(
            {
                "name": name,
                "cat": "python",
                "ph": "X",
                "ts": start_ns / 1000.0,
                "dur": (end_ns - start_ns) / 1000.0,
                "pid": self._pid,
                "tid": self._tid,
            }
        )

    def stop(self) -> None:
        sys.setprofile(self._previous)
        now = time.perf_counter_ns()
        while self._stack:  # frames still open when tracing stopped end here
            name, start = self._stack.pop()
            self._record(name, start, now)

    def stop_and_export(self, path: Path) -> None:
        self.stop()
        trace = {
            "traceEvents": self._events,
            "displayTimeUnit": "ms",
            "otherData": {"tracer": "trainhooks python", "truncated": self._truncated},
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(trace, f)
            f.flush()
            os.fsync(f.fileno())
