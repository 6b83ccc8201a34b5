"""The errors a session raises when it is used the wrong way, with the fix in the message."""

from __future__ import annotations

__all__ = ["nested_run_error", "run_after_stop_error"]


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
