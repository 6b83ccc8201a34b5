"""The errors a session raises when it is used the wrong way, with the fix in the message."""

from __future__ import annotations

from typing import Any

__all__ = ["check_arguments", "nested_run_error", "run_after_stop_error"]


def check_arguments(session_creator: Any, steps_per_run: Any) -> None:
    """Refuse TF's ``session_creator`` and a ``steps_per_run`` that is no positive int."""
    if session_creator is not None:
        raise TypeError(
            "trainhooks sessions have no session_creator (there is no graph to "
            "initialise); pass state=... and checkpoint_dir=... to the session instead"
        )
    if not isinstance(steps_per_run, int) or steps_per_run < 1:
        raise ValueError(f"steps_per_run must be a positive int, got {steps_per_run!r}")


def nested_run_error(what: str, busy: str | None, step: int) -> RuntimeError:
    """A run started from inside hook code or a running step."""
    return RuntimeError(
        f"{what} was called from inside {busy} (global step "
        f"{step}); that would run and count a training step inside the "
        "current one, and trigger the saver's hooks again. To compute a value there, "
        "call the function directly (e.g. eval_fn(...) or model(x)) and read the "
        "model from session.state; a hook gets the step's results in run_values"
    )


def run_after_stop_error(step: int) -> RuntimeError:
    """A run after ``should_stop()`` became true."""
    return RuntimeError(
        "run called even after should_stop() became true (a hook or the step "
        f"requested a stop at global step {step}); loop with "
        "`while not sess.should_stop(): sess.run(...)`"
    )
