"""Shared helpers of the reliability suite (imported by its tests; not a test module).

What lives here: the zygote that forks training workers for the SIGKILL loop, the replay
of the deterministic training used to check restored weights bit for bit, and the checks
every crash test repeats (no staging leftover listed, latest restores and verifies, files
of older checkpoints unchanged).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from _support import child_train as child  # the child script doubles as the model definition

HERE = Path(__file__).resolve().parent
CHILD_SCRIPT = HERE / "child_train.py"
LONG = os.environ.get("TRAINHOOKS_LONG") == "1"
LONG_TIMEOUT = 7200  # seconds; pyproject's 300-second default would cut long runs short
# Tests whose size grows in long mode carry ``long_timeout``; long-only tests ``long_only``.
long_timeout = pytest.mark.timeout(LONG_TIMEOUT if LONG else 300)


def long_only(test: Any) -> Any:
    """Run ``test`` only with TRAINHOOKS_LONG=1 (marked ``long``, with a long timeout)."""
    skip = pytest.mark.skipif(not LONG, reason="long reliability run: set TRAINHOOKS_LONG=1")
    return pytest.mark.long(pytest.mark.timeout(LONG_TIMEOUT)(skip(test)))


COMMITTED_NAME = re.compile(r"ckpt-\d{12}")
# Generous guard against a hung child; the suite never asserts on durations.
LINE_WAIT_SECONDS = 180.0


def leftovers(directory: Path) -> set[str]:
    """Names of staging (``.tmp-``) and deletion (``.deleting-``) entries in ``directory``."""
    if not directory.exists():
        return set()
    return {p.name for p in directory.iterdir() if ".tmp-" in p.name or ".deleting-" in p.name}


def digests(directory: Path) -> dict[str, str]:
    """sha256 of every regular file below ``directory`` (lock file excluded), by relative path."""
    out: dict[str, str] = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name != ".trainhooks.lock":
            out[str(path.relative_to(directory))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def committed_digests(directory: Path) -> dict[str, str]:
    """Like :func:`digests` but only for files inside committed checkpoint directories."""
    return {
        name: digest
        for name, digest in digests(directory).items()
        if COMMITTED_NAME.fullmatch(Path(name).parts[0])
    }


class Reference:
    """The uninterrupted training trajectory, replayed in this process on demand."""

    def __init__(self) -> None:
        import torch

        self._torch = torch
        self._state = child.build_state(torch, marker_len=1)
        self._params: list[dict[str, Any]] = [self._snapshot()]

    def _snapshot(self) -> dict[str, Any]:
        return {k: v.detach().clone() for k, v in self._state["model"].state_dict().items()}

    def params(self, step: int) -> dict[str, Any]:
        """Model parameters after ``step`` steps of uninterrupted training."""
        while len(self._params) <= step:
            child.train_step(self._torch, self._state, len(self._params))
            self._params.append(self._snapshot())
        return self._params[step]


def fresh_state(marker_len: int = child.MARKER_LEN) -> dict[str, Any]:
    """A new, untrained copy of the workers' state to restore into."""
    import torch

    return child.build_state(torch, marker_len)


def assert_restores_exactly(directory: Path, reference: Reference, step: int) -> None:
    """``Saver.restore`` of the newest checkpoint gives step ``step`` with replayed weights."""
    import torch

    import trainhooks

    state = fresh_state()
    with trainhooks.Saver() as saver:
        info = saver.restore(state, directory)
    assert info.step == step
    child.check_restored(state, step)
    expected = reference.params(step)
    for name, value in state["model"].state_dict().items():
        assert torch.equal(value, expected[name]), f"{name} differs from the replay at {step}"


def assert_listing_clean(directory: Path, *, verify_newest: int | None = None) -> list[Any]:
    """Listing shows only committed names, sorted by step; the newest ``verify_newest``
    (default: all) verify in full, every one passes the structure check of listing."""
    import trainhooks

    infos = trainhooks.list_checkpoints(directory)
    assert [i.step for i in infos] == sorted({i.step for i in infos})
    for info in infos:
        assert COMMITTED_NAME.fullmatch(info.path.name), info.path
    for info in infos[-verify_newest:] if verify_newest else infos:
        trainhooks.verify_checkpoint(info.path)
    return infos


@dataclass
class WorkerRun:
    """What one zygote worker said before it exited."""

    pid: int
    start: int | None
    saved: list[int]
    done: int | None
    status: int
    killed_by_parent: bool

    @property
    def sigkilled(self) -> bool:
        return os.WIFSIGNALED(self.status) and os.WTERMSIG(self.status) == 9


class Zygote:
    """A child that imported torch and trainhooks once and forks a worker per request."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115  (closed in close())
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD_SCRIPT), "--zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            bufsize=0,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.expect("ready")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw.decode().rstrip("\n"))
        self._lines.put(None)

    def log_tail(self, nbytes: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_bytes()[-nbytes:].decode(errors="replace")

    def next_event(self, timeout: float | None = LINE_WAIT_SECONDS) -> tuple[str, str]:
        """The next ``(event, value)`` line; fails (with the child's stderr) on EOF or hang."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"zygote silent for {timeout} s; stderr:\n{self.log_tail()}")
        if line is None:
            pytest.fail(f"zygote exited; stderr:\n{self.log_tail()}")
        event, _, value = line.partition(" ")
        return event, value

    def poll_event(self) -> tuple[str, str] | None:
        """The next line if one is already waiting, else None (never blocks)."""
        try:
            line = self._lines.get_nowait()
        except queue.Empty:
            return None
        if line is None:
            pytest.fail(f"zygote exited; stderr:\n{self.log_tail()}")
        event, _, value = line.partition(" ")
        return event, value

    def expect(self, event: str) -> str:
        got, value = self.next_event()
        assert got == event, f"expected {event!r}, child said {got} {value}\n{self.log_tail()}"
        return value

    def spawn(self, config: Mapping[str, Any]) -> int:
        """Fork a worker for ``config``; returns its pid once it exists."""
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(dict(config)) + "\n").encode())
        self.proc.stdin.flush()
        return int(self.expect("worker"))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=LINE_WAIT_SECONDS)
        self._log.close()


def run_child(config: Mapping[str, Any], *, faults: str | None = None, **kw: Any) -> Any:
    """Run one worker as its own process (fault spec via ``TRAINHOOKS_FAULTS``)."""
    env = dict(os.environ)
    env.pop("TRAINHOOKS_FAULTS", None)
    if faults is not None:
        env["TRAINHOOKS_FAULTS"] = faults
    return subprocess.run(
        [sys.executable, str(CHILD_SCRIPT), json.dumps(dict(config))],
        env=env,
        capture_output=True,
        timeout=LINE_WAIT_SECONDS,
        check=False,
        **kw,
    )


def events_of(stdout: bytes) -> list[tuple[str, int]]:
    """Parse a single-process worker's stdout into ``(event, step)`` pairs."""
    pairs = []
    for line in stdout.decode().splitlines():
        event, _, value = line.partition(" ")
        pairs.append((event, int(value)))
    return pairs


def report_figure(name: str, **values: Any) -> None:
    """Print a figure for docs/reliability.md; also append it to $TRAINHOOKS_FIGURES if set."""
    line = json.dumps({"figure": name, **values}, sort_keys=True)
    print(line)
    path = os.environ.get("TRAINHOOKS_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
