"""The system calls of one save happen in the order that makes the commit crash-consistent.

A child process saves a real torch state under ``strace``; the test reads the trace between
two marker writes and checks the protocol of docs/reliability.md: every write of a file,
then its fsync, then its close; the manifest last; fsync of the staging directory; the
rename (commit point); fsync of the parent; retention only after that; and only then does
``save()`` return. ``strace -e inject`` also delivers a real SIGKILL (or an error) at an
exact system call, which no fault point can reach: between two renames of one save.

Skipped when strace is not installed (CI images without it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import trainhooks
from _support.reliability import leftovers


def _strace_works() -> bool:
    """strace is installed and may trace here (containers can forbid ptrace)."""
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(
        ["strace", "-f", "-qq", "-o", "/dev/null", "true"], capture_output=True, check=False
    )
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _strace_works(), reason="strace is not installed or may not trace in this container"
)

TRACED = "openat,write,fsync,fdatasync,close,rename,renameat,renameat2,mkdir,mkdirat,unlinkat,rmdir"
SAVE_SCRIPT = """
import os, sys
import torch
import trainhooks

directory, max_to_keep, resave = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resave"
state = {"w": torch.arange(3000, dtype=torch.float32), "b": torch.ones(3, 3), "n": {"k": 1}}
with trainhooks.Saver(max_to_keep=max_to_keep) as saver:
    saver.save(state, directory, 0)
    os.write(1, b"SAVE_BEGIN\\n")
    saver.save(state, directory, 1)
    os.write(1, b"SAVE_END\\n")
    if not resave:
        sys.exit(0)
    state["w"] += 1
    os.write(1, b"RESAVE_BEGIN\\n")
    try:
        saver.save(state, directory, 1)  # the same step again, with changed contents
        os.write(1, b"RESAVE_OK\\n")
    except trainhooks.CheckpointWriteError as exc:
        os.write(1, f"RESAVE_ERROR {exc.errno}\\n".encode())
"""
LINE = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(\w+)\((.*)\)\s+=\s+(-?\d+|\?)")
FD_PATH = re.compile(r"^\d+<([^>]*)>")
STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Call:
    """One traced system call: its name, the path it acted on, its string arguments."""

    index: int
    name: str
    path: str
    strings: tuple[str, ...]
    result: int


def parse_trace(text: str) -> list[Call]:
    calls = []
    for line in text.splitlines():
        match = LINE.match(line)
        if match is None:
            continue  # signals, exits, resumed halves of interrupted calls
        _, name, args, result = match.groups()
        fd_path = FD_PATH.match(args)
        strings = tuple(STRING.findall(args))
        path = fd_path.group(1) if fd_path else (strings[0] if strings else "")
        if name == "openat":
            path = strings[0] if strings else path
        calls.append(Call(len(calls), name, path, strings, int(result) if result != "?" else 0))
    return calls


def window(calls: list[Call], begin: str, end: str) -> list[Call]:
    marks = [c.index for c in calls if c.name == "write" and c.strings]
    start = next(i for i in marks if calls[i].strings[0].startswith(begin))
    stop = next(i for i in marks if calls[i].strings[0].startswith(end) and i > start)
    return calls[start + 1 : stop]


def run_traced(
    tmp_path: Path, max_to_keep: int, resave: bool, *extra: str
) -> tuple[str, list[Call], Path]:
    directory = tmp_path / "ckpt"
    trace = tmp_path / "trace.txt"
    command = ["strace", "-f", "-qq", "-y", "-o", str(trace), "-e", f"trace={TRACED}", *extra]
    command += [sys.executable, "-c", SAVE_SCRIPT, str(directory), str(max_to_keep)]
    command.append("resave" if resave else "once")
    done = subprocess.run(command, capture_output=True, timeout=300, check=False)
    assert done.returncode in (0, -9, 137), done.stderr.decode()[-3000:]
    return done.stdout.decode(), parse_trace(trace.read_text(errors="replace")), directory


def first(calls: list[Call], name: str, path_pattern: str, after: int = -1) -> Call:
    for call in calls:
        if call.index > after and call.name == name and re.search(path_pattern, call.path):
            return call
    raise AssertionError(f"no {name} on {path_pattern!r} after call {after}")


def test_a_save_writes_fsyncs_closes_each_file_then_commits_by_rename(tmp_path: Path) -> None:
    stdout, calls, directory = run_traced(tmp_path, 1, False)
    assert "SAVE_END" in stdout
    save = window(calls, "SAVE_BEGIN", "SAVE_END")
    assert all(c.result >= 0 for c in save), [c for c in save if c.result < 0]
    staging = r"ckpt-000000000001\.tmp-[0-9a-f]{32}"
    made = first(save, "mkdir", staging + "$")
    closed: dict[str, int] = {}
    for name in ("tensors.safetensors", "manifest.json"):
        pattern = f"{staging}/{re.escape(name)}$"
        opened = first(save, "openat", pattern, made.index)
        writes = [c for c in save if c.name == "write" and re.search(pattern, c.path)]
        synced = first(save, "fsync", pattern, opened.index)
        closing = first(save, "close", pattern, synced.index)
        assert writes and all(opened.index < w.index < synced.index for w in writes)
        final_size = (directory / "ckpt-000000000001" / name).stat().st_size
        assert sum(w.result for w in writes) == final_size
        closed[name] = closing.index
    manifest_open = first(save, "openat", f"{staging}/manifest.json$")
    assert closed["tensors.safetensors"] < manifest_open.index, "manifest must be written last"
    staging_sync = first(save, "fsync", staging + "$", closed["manifest.json"])
    commit = first(save, "rename", staging + "$", staging_sync.index)
    assert commit.strings[1].endswith("/ckpt-000000000001")
    parent_sync = first(save, "fsync", re.escape(str(directory)) + "$", commit.index)
    retention = [c for c in save if c.name == "rename" and c.index != commit.index]
    assert retention, "max_to_keep=1 must retire step 0 in this save"
    assert all(c.index > parent_sync.index for c in retention), "retention before durability"
    assert retention[0].strings[1].split("/")[-1].startswith("ckpt-000000000000.deleting-")


@pytest.mark.parametrize("injected", ["signal=KILL", "error=EIO"])
def test_resaving_a_step_never_leaves_the_directory_without_that_step(
    tmp_path: Path, injected: str
) -> None:
    """Re-saving step 1 swaps the new copy in with one atomic renameat2(RENAME_EXCHANGE): a
    crash (or an error) at that swap must not leave step 1 missing (a lost old copy would make
    "latest" go back to step 0)."""
    # commits use rename(2); the re-save is the process's first renameat2 (strace counts
    # each syscall separately)
    inject = f"inject=renameat2:{injected}:when=1"
    stdout, _, directory = run_traced(tmp_path, 0, True, "-e", inject)
    assert "RESAVE_BEGIN" in stdout
    if injected == "error=EIO":
        assert "RESAVE_ERROR 5" in stdout, stdout
    steps = [info.step for info in trainhooks.list_checkpoints(directory)]
    on_disk = sorted(p.name for p in directory.iterdir())
    assert steps == [0, 1], f"step 1 vanished; on disk: {on_disk}"
    trainhooks.verify_checkpoint(directory / "ckpt-000000000001")
    with trainhooks.Saver(max_to_keep=None) as saver:  # the next start sweeps leftovers
        saver.save({"x": [1]}, directory, 2)
    assert not leftovers(directory)
    assert [info.step for info in trainhooks.list_checkpoints(directory)] == [0, 1, 2]
