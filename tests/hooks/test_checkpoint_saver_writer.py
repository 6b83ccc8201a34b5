"""One writer per directory: saver hooks of one session share it; another process is refused
at session creation, before any step runs, with a message that points to ``is_chief``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _support.session import Counter, RecordingListener, quiet_session, save_pair
from trainhooks import (
    CheckpointLockedError,
    CheckpointSaverHook,
    StopAtStepHook,
    list_checkpoints,
)

HOLDER_SCRIPT = """
import sys
import numpy as np
import trainhooks

with trainhooks.Saver() as saver:
    saver.save({"w": np.zeros(4, dtype=np.float32)}, sys.argv[1], 0)
    print("holding", flush=True)
    sys.stdin.readline()  # keep the lock until the parent says so
"""


def test_two_saver_hooks_on_one_directory_share_its_writer(
    tmp_path: Path, counter: Counter, trace: list[str]
) -> None:
    every_2 = CheckpointSaverHook(tmp_path, save_steps=2, listeners=[RecordingListener("a", trace)])
    every_3 = CheckpointSaverHook(tmp_path, save_steps=3, listeners=[RecordingListener("b", trace)])
    with quiet_session(
        state=counter.state,
        chief_only_hooks=[every_2, every_3],
        hooks=[StopAtStepHook(last_step=6)],
    ) as sess:
        while not sess.should_stop():
            sess.run(counter.step)

    assert [c.step for c in list_checkpoints(tmp_path)] == [0, 2, 3, 4, 6]  # no lock error
    assert [e for e in trace if e.startswith("b.")] == [
        "b.begin",
        *save_pair("b", 0, 3, 6),
        "b.end(6)",
    ]
    assert sess.global_step == 6


def hold_directory(directory: Path) -> subprocess.Popen[bytes]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline() == b"holding\n", holder.communicate()[1].decode()
    return holder


def test_a_chief_takes_the_lock_at_creation_and_names_is_chief_when_refused(
    tmp_path: Path, counter: Counter
) -> None:
    holder = hold_directory(tmp_path)
    try:
        with pytest.raises(CheckpointLockedError) as info:
            quiet_session(
                state={"w": np.zeros(4, dtype=np.float32)},
                checkpoint_dir=tmp_path,
                save_checkpoint_steps=1000,  # long before its first real save
            )
    finally:
        holder.communicate(b"release\n", timeout=120)
    message = str(info.value)
    assert f"pid {holder.pid}" in message and "is_chief=False" in message
    assert counter.runs == 0
    assert [c.step for c in list_checkpoints(tmp_path)] == [0]  # the holder's, untouched
