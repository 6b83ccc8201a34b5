"""SIGKILL at random moments of a save loop never costs a committed checkpoint.

A child process saves step after step (with retention running) and reports each step once
``save()`` returned; the test kills it with SIGKILL at a random moment, then checks that the
newest checkpoint verifies and restores, holds the values of its step, is at least the last
step the child reported, and never goes backwards. ~15 kills by default; 300 with
``TRAINHOOKS_LONG=1``. ``TRAINHOOKS_SEED`` replays a run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np

from trainhooks import Saver, latest_checkpoint, list_checkpoints, verify_checkpoint

KILLS = 300 if os.environ.get("TRAINHOOKS_LONG") == "1" else 15
SHAPE = (256, 256)  # 256 KiB per save: kills land inside writes, fsyncs and renames

_SAVE_LOOP = textwrap.dedent(
    f"""
    import sys
    import numpy as np
    from trainhooks import Saver

    directory, step = sys.argv[1], int(sys.argv[2])
    with Saver(max_to_keep=2) as saver:
        print("ready", flush=True)
        while True:
            step += 1
            state = {{
                "weight": np.full({SHAPE}, step, np.float32),
                "tail": {{"bias": np.arange(7, dtype=np.int64) * step, "step": step}},
            }}
            saver.save(state, directory, step=step)
            print(step, flush=True)
    """
)


def _blank() -> dict:
    return {
        "weight": np.zeros(SHAPE, np.float32),
        "tail": {"bias": np.zeros(7, np.int64), "step": -1},
    }


def _run_and_kill(directory: Path, start: int, delay: float, after_a_save: bool) -> int:
    """Run the save loop and SIGKILL it ``delay`` s after it is ready (or, with
    ``after_a_save``, after its first completed save); return the last step it reported."""
    child = subprocess.Popen(
        [sys.executable, "-c", _SAVE_LOOP, os.fspath(directory), str(start)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TRAINHOOKS_FAULTS": ""},
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    first = [int(child.stdout.readline())] if after_a_save else []  # progress on slow disks
    try:
        child.wait(timeout=delay)  # returns only if the loop died on its own
    except subprocess.TimeoutExpired:
        os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL, "the save loop died on its own"
    reported = first + [int(line) for line in child.stdout.read().split()]
    child.stdout.close()
    return reported[-1] if reported else start


def _check_latest(directory: Path, at_least: int, context: str) -> int:
    latest = latest_checkpoint(directory)
    if at_least == 0 and latest is None:
        return 0
    assert latest is not None, f"{context}: no checkpoint left"
    assert latest.step >= at_least, f"{context}: latest {latest.step} < {at_least}"
    for info in list_checkpoints(directory):
        verify_checkpoint(info.path)
    state = _blank()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the newest must restore without a fallback
        info = Saver().restore(state, directory)
    assert info.step == latest.step, context
    assert state["tail"]["step"] == latest.step, context
    assert np.all(state["weight"] == latest.step), f"{context}: weight of another step"
    assert state["tail"]["bias"].tolist() == [i * latest.step for i in range(7)], context
    return latest.step


def test_sigkill_during_save_loop_never_loses_the_latest(tmp_path: Path) -> None:
    seed = int(os.environ.get("TRAINHOOKS_SEED", "0"))
    rng = random.Random(seed)
    latest = 0
    for kill in range(KILLS):
        delay = rng.uniform(0.0, 0.25)
        reported = _run_and_kill(tmp_path, latest, delay, after_a_save=kill % 2 == 1)
        context = f"seed {seed}, kill {kill} after {delay:.3f}s, child reported {reported}"
        latest = _check_latest(tmp_path, max(latest, reported), context)
    assert latest > 0, "no save ever completed: the delays are too short for this machine"
