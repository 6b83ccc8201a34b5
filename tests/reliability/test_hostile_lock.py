"""The writer's lock file: never written through a planted link, never kept by a fork.

``.trainhooks.lock`` is opened, truncated and written by every writer. Something planted
in its place — a symlink (to a file, a directory, nowhere), a hard link to a file outside,
a FIFO, a directory — must be refused with a ``CheckpointWriteError`` and leave its target
untouched. And a child forked by the writer (a DataLoader worker) must not keep the lock
alive after the writer is SIGKILLed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _support.reliability import report_figure
from trainhooks import CheckpointWriteError, Saver, list_checkpoints, prune_checkpoints

LOCK = ".trainhooks.lock"
COUNTS = {"planted": 0, "writer_calls": 0, "typed_errors": 0}


@pytest.fixture(autouse=True, scope="module")
def _figures() -> Any:
    yield
    report_figure("hostile_lock", **COUNTS)


def _symlink_to_file(lock: Path, outside: Path) -> Path:
    outside.write_bytes(b"precious")
    os.symlink(outside, lock)
    return outside


def _symlink_to_nowhere(lock: Path, outside: Path) -> Path:
    os.symlink(outside, lock)  # O_CREAT through it would create ``outside``
    return outside


def _symlink_to_directory(lock: Path, outside: Path) -> Path:
    outside.mkdir()
    os.symlink(outside, lock)
    return outside


def _hard_link_to_file(lock: Path, outside: Path) -> Path:
    outside.write_bytes(b"precious")
    os.link(outside, lock)
    return outside


def _fifo(lock: Path, outside: Path) -> Path:
    os.mkfifo(lock)
    return lock


def _directory(lock: Path, outside: Path) -> Path:
    lock.mkdir()
    (lock / "inside").write_bytes(b"precious")
    return lock


PLANTS: dict[str, Callable[[Path, Path], Path]] = {
    "symlink_to_a_file": _symlink_to_file,
    "symlink_to_nowhere": _symlink_to_nowhere,
    "symlink_to_a_directory": _symlink_to_directory,
    "hard_link_to_a_file": _hard_link_to_file,
    "fifo": _fifo,
    "directory": _directory,
}


def _snapshot(path: Path) -> Any:
    if path.is_symlink() or not path.exists():
        return ("absent" if not path.exists() else "link", None)
    if path.is_dir():
        return ("dir", sorted((p.name, p.read_bytes()) for p in path.iterdir()))
    if path.is_fifo():
        return ("fifo", None)
    return ("file", path.read_bytes())


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_a_planted_lock_file_is_refused_and_its_target_untouched(
    plant: str, tmp_path: Path
) -> None:
    directory, outside = tmp_path / "run", tmp_path / "outside"
    with Saver() as saver:
        saver.save({"w": np.zeros(2)}, directory, step=1)
    os.unlink(directory / LOCK)
    target = PLANTS[plant](directory / LOCK, outside)
    before = _snapshot(target)
    COUNTS["planted"] += 1
    writers: dict[str, Callable[[], Any]] = {
        "save": lambda: Saver().save({"w": np.ones(2)}, directory, step=2),
        "prune": lambda: prune_checkpoints(directory, keep=1),
    }
    for name, write in writers.items():
        COUNTS["writer_calls"] += 1
        with pytest.raises(CheckpointWriteError) as caught:
            write()
        COUNTS["typed_errors"] += 1
        assert LOCK in str(caught.value), f"{name}: {caught.value}"
        assert _snapshot(target) == before, f"{name} wrote through the planted {plant}"
    assert not outside.exists() or plant != "symlink_to_nowhere"
    assert [info.step for info in list_checkpoints(directory)] == [1]


_FORKING_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from trainhooks import Saver

    saver = Saver()
    saver.save({"w": np.zeros(2)}, sys.argv[1], step=1)
    child = os.fork()
    if child == 0:  # a DataLoader worker: lives on until the test closes our stdin
        os.write(1, b"forked\\n")  # fork() has returned here: the at-fork handlers ran
        sys.stdin.buffer.read()
        os._exit(0)
    os.write(1, b"%d\\n" % child)  # one write each: lines never interleave
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_forked_child_does_not_keep_a_killed_writers_lock(tmp_path: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", _FORKING_WRITER, os.fspath(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert writer.stdout is not None and writer.stdin is not None and writer.stderr is not None
    lines = {writer.stdout.readline().strip() for _ in range(2)}  # either may come first
    assert b"forked" in lines, (lines, writer.stderr.read().decode()[-2000:])
    child = int(next(line for line in lines if line != b"forked"))
    try:
        assert writer.wait(timeout=120) == -signal.SIGKILL
        os.kill(child, 0)  # the forked child is still alive
        with Saver() as saver:
            saver.save({"w": np.ones(2)}, tmp_path, step=2)
        assert [info.step for info in list_checkpoints(tmp_path)] == [1, 2]
    finally:
        writer.stdin.close()  # lets the child exit
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


_CHILD_WRITES = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    from trainhooks import CheckpointLockedError, Saver

    saver = Saver()
    saver.save({"w": np.zeros(2)}, sys.argv[1], step=1)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child tries to write with the saver it inherited
        try:
            saver.save({"w": np.ones(2)}, sys.argv[1], step=2)
            outcome = "saved"
        except CheckpointLockedError as exc:
            outcome = str(exc)
        os.write(writer, outcome.encode())
        os._exit(0)
    os.close(writer)
    outcome = os.read(reader, 4096).decode()
    os.waitpid(child, 0)
    saver.save({"w": np.ones(2)}, sys.argv[1], step=3)  # the parent still holds the lock
    print(json.dumps(outcome))
    """
)


def test_a_forked_child_cannot_write_with_its_parents_lock(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD_WRITES, os.fspath(tmp_path)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    outcome = json.loads(done.stdout)
    assert "locked by another checkpoint writer" in outcome, outcome
    assert [info.step for info in list_checkpoints(tmp_path)] == [1, 3]
