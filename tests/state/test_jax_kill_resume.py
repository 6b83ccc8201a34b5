"""A JAX + optax job SIGKILLed right after checkpoints and restarted ends bit-identical to
an uninterrupted run: the restored optax state is the namedtuples optax needs, the key is a
typed key again, and training picks up exactly where the checkpoint left it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from trainhooks import list_checkpoints, load

JOB = Path(__file__).resolve().parent / "_jax_optax_job.py"
LAST_STEP = 20


def _run(directory: Path, *, kill_after_save: int | None = None) -> list[tuple[str, int]]:
    """Run the job; SIGKILL it once it reports a save at or after ``kill_after_save``."""
    process = subprocess.Popen(
        [sys.executable, str(JOB), os.fspath(directory), str(LAST_STEP)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    events: list[tuple[str, int]] = []
    assert process.stdout is not None
    for line in process.stdout:
        event, _, value = line.partition(" ")
        events.append((event, int(value)))
        if kill_after_save is not None and event == "saved" and int(value) >= kill_after_save:
            os.kill(process.pid, signal.SIGKILL)
            break
    _, stderr = process.communicate(timeout=240)
    if kill_after_save is None:
        assert process.returncode == 0, stderr
    else:
        assert process.returncode == -signal.SIGKILL, stderr
    return events


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}/{key}").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, sub in enumerate(tree) for k, v in _flat(sub, f"{prefix}/{i}").items()}
    return {prefix: tree}


def test_a_killed_jax_optax_job_resumes_bit_identically(tmp_path: Path) -> None:
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert _run(reference)[-1] == ("done", LAST_STEP)

    last_saved = 0
    for kill_after_save in (4, 10, None):  # two kills right after a save, then to the end
        events = _run(killed, kill_after_save=kill_after_save)
        start = next(value for event, value in events if event == "start")
        assert start >= last_saved, "a save reported before the kill was lost"
        last_saved = max(value for event, value in events if event == "saved")
    assert events[-1] == ("done", LAST_STEP)

    expected = _flat(load(list_checkpoints(reference)[-1].path))
    actual = _flat(load(list_checkpoints(killed)[-1].path))
    assert list_checkpoints(killed)[-1].step == LAST_STEP
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        if isinstance(value, np.ndarray):
            assert actual[name].tobytes() == value.tobytes(), name
        else:
            assert actual[name] == value, name
