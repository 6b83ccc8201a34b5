"""Retention survives crashes: a writer killed between a commit and its deletions leaves
nothing behind for good, because the next writer reads the retention record from the
newest checkpoint's manifest and finishes the job."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trainhooks import list_checkpoints

_SAVE_STEPS = textwrap.dedent(
    """
    import sys
    import numpy as np
    import trainhooks
    directory, first, last, keep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    saver = trainhooks.Saver(max_to_keep=None if keep == "none" else int(keep))
    for step in range(first, last + 1):
        saver.save({"w": np.full(4, step, np.float32)}, directory, step)
    """
)


def _save_steps(directory: Path, first: int, last: int, keep: str, faults: str = "") -> int:
    env = {**os.environ, "TRAINHOOKS_FAULTS": faults}
    args = [sys.executable, "-c", _SAVE_STEPS, str(directory), str(first), str(last), keep]
    return subprocess.run(args, env=env, check=False).returncode


def _steps(directory: Path) -> list[int]:
    return [info.step for info in list_checkpoints(directory)]


@pytest.mark.parametrize("point", ["after_rename", "before_parent_fsync", "retention_after_mark"])
def test_a_kill_between_commit_and_deletion_leaks_no_checkpoint(tmp_path: Path, point) -> None:
    assert _save_steps(tmp_path, 1, 3, "2") == 0
    assert _steps(tmp_path) == [2, 3]
    # step 4 commits, then the process dies before (or while) retention removes step 2
    assert _save_steps(tmp_path, 4, 4, "2", faults=f"{point}=kill") == -9
    assert 4 in _steps(tmp_path)
    assert _save_steps(tmp_path, 5, 6, "2") == 0
    assert _steps(tmp_path) == [5, 6]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".trainhooks.lock",
        "ckpt-000000000005",
        "ckpt-000000000006",
    ]


def test_checkpoints_kept_by_an_earlier_keep_all_run_are_left_alone(tmp_path: Path) -> None:
    assert _save_steps(tmp_path, 1, 4, "none") == 0
    assert _save_steps(tmp_path, 5, 7, "2") == 0
    # the keep-all run managed nothing, so its checkpoints stay; the new run keeps its window
    assert _steps(tmp_path) == [1, 2, 3, 4, 6, 7]
