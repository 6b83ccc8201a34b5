"""Ctrl-C while a session waits for its final background save leaves nothing half-written.

A training process with ``async_save=True`` finishes training; its final save is made
slow (the ``after_data_file=sleep`` fault point pauses the writer thread with the data file
written); the test sends SIGINT, as a terminal's Ctrl-C does, while the training thread
waits for that save. The save is cancelled before its commit point and its staging
directory removed, then ``KeyboardInterrupt`` ends the process: the directory holds the
checkpoint of step 0 and nothing else. (Should the signal arrive just before the wait
began, the save completes instead; both outcomes leave only whole checkpoints.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import trainhooks
from _support.reliability import leftovers

CHILD = """
import sys
import torch
import trainhooks as th

state = {"w": torch.zeros(1_000_000)}
with th.MonitoredTrainingSession(
    checkpoint_dir=sys.argv[1],
    state=state,
    hooks=[th.StopAtStepHook(last_step=3)],
    save_checkpoint_steps=100,
    save_summaries_steps=None,
    log_step_count_steps=None,
    async_save=True,
) as session:
    while not session.should_stop():
        session.run(lambda: state["w"].add_(1.0))
    print("training done", flush=True)
print("closed normally", flush=True)
"""


def _final_save_in_flight(directory: Path, child: subprocess.Popen[bytes]) -> None:
    """Return once the final save's staging directory holds its data file (polled)."""
    deadline = time.monotonic() + 120
    while not any((p / "tensors.safetensors").exists() for p in directory.glob("ckpt-*3.tmp-*")):
        assert child.poll() is None, "the child ended before its final save was in flight"
        assert time.monotonic() < deadline, "the final save never started"
        time.sleep(0.005)


def test_ctrl_c_during_the_final_background_save_leaves_only_whole_checkpoints(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "ckpt"
    env = {**os.environ, "TRAINHOOKS_FAULTS": "after_data_file=sleep:2@2"}  # 2nd save: final
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"training done\n"
    _final_save_in_flight(directory, child)

    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)

    assert child.returncode != 0 and b"closed normally" not in out
    assert b"KeyboardInterrupt" in err, err.decode()[-3000:]
    assert not leftovers(directory)
    steps = [info.step for info in trainhooks.list_checkpoints(directory)]
    assert steps in ([0], [0, 3])  # cancelled cleanly, or (rarely) finished before the wait
    for info in trainhooks.list_checkpoints(directory):
        trainhooks.verify_checkpoint(info.path)
