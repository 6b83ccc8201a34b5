"""Failing writes and competing writers, with real child processes.

Disk full is simulated without root: the child lowers RLIMIT_FSIZE (with SIGXFSZ ignored,
so writes fail with EFBIG instead of killing it). The lock test runs a second writer in
another process while this one holds the directory.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from _support.store import hash_tree, save_steps
from trainhooks import Saver, list_checkpoints

_DISK_FULL_CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    import numpy as np
    from trainhooks import CheckpointWriteError, Saver

    directory, limit = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    saver = Saver(max_to_keep=1)
    saver.save({"w": np.zeros(4)}, directory + "/warmup", step=0)  # imports, opens, locks
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        saver.save({"w": np.ones(1 << 20, np.float32)}, directory, step=3)  # 4 MiB
    except CheckpointWriteError as exc:
        print(json.dumps({"type": type(exc).__name__, "errno": exc.errno, "step": exc.step,
                          "path": exc.path, "message": str(exc)}))
    else:
        print(json.dumps({"type": None}))
    """
)


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRAINHOOKS_FAULTS": ""}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,  # a hang guard, not a timing assertion
        env=env,
        check=False,
    )


def test_disk_full_raises_write_error_and_touches_nothing(tmp_path: Path) -> None:
    save_steps(tmp_path, [1, 2], max_to_keep=None)
    before = hash_tree(tmp_path)
    assert len(before) == 5  # two checkpoints of two files, and the lock file
    result = _python(_DISK_FULL_CHILD, os.fspath(tmp_path), str(256 * 1024))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["type"] == "CheckpointWriteError", report
    assert report["errno"] in (errno.EFBIG, errno.ENOSPC), report
    assert report["step"] == 3
    assert str(tmp_path) in report["message"]
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".deleting" in p.name]
    assert leftovers == [], "the staging directory was not removed"
    after = hash_tree(tmp_path)
    after = {k: v for k, v in after.items() if k.startswith("ckpt-")}
    assert after == {k: v for k, v in before.items() if k.startswith("ckpt-")}, (
        "committed checkpoints changed (or retention ran) after a failure"
    )
    assert [i.step for i in list_checkpoints(tmp_path)] == [1, 2]


_SECOND_WRITER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from trainhooks import CheckpointLockedError, Saver, prune_checkpoints

    outcomes = {}
    try:
        with Saver() as saver:
            saver.save({"w": np.zeros(2)}, sys.argv[1], step=int(sys.argv[2]))
        outcomes["save"] = "saved"
    except CheckpointLockedError as exc:
        outcomes["save"] = str(exc)
    try:
        prune_checkpoints(sys.argv[1], keep=1)
        outcomes["prune"] = "pruned"
    except CheckpointLockedError as exc:
        outcomes["prune"] = str(exc)
    print(json.dumps(outcomes))
    """
)


def test_second_writer_in_another_process_is_refused(tmp_path: Path) -> None:
    with Saver() as saver:
        saver.save({"w": np.zeros(2)}, tmp_path, step=1)
        result = _python(_SECOND_WRITER, os.fspath(tmp_path), "2")
        assert result.returncode == 0, result.stderr
        outcomes = json.loads(result.stdout)
        assert "locked" in outcomes["save"] and f"pid {os.getpid()}" in outcomes["save"]
        assert "locked" in outcomes["prune"]
        assert [i.step for i in list_checkpoints(tmp_path)] == [1]
        saver.save({"w": np.ones(2)}, tmp_path, step=3)  # the holder keeps writing
    result = _python(_SECOND_WRITER, os.fspath(tmp_path), "4")  # released on close()
    assert json.loads(result.stdout) == {"save": "saved", "prune": "pruned"}
    assert [i.step for i in list_checkpoints(tmp_path)] == [4]


def test_a_killed_writer_leaves_no_stale_lock(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import os, signal, sys
        import numpy as np
        from trainhooks import Saver
        Saver().save({"w": np.zeros(2)}, sys.argv[1], step=1)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert _python(code, os.fspath(tmp_path)).returncode == -9
    with Saver() as saver:
        saver.save({"w": np.zeros(2)}, tmp_path, step=2)
    assert [i.step for i in list_checkpoints(tmp_path)] == [1, 2]
