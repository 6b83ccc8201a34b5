"""A real SIGTERM to a real training process in the middle of a step.

The child (``_support/preempt_child.py``) trains ``child_train``'s model through
``MonitoredTrainingSession``, saving every 5 steps, and stops in the middle of step 7
until the parent writes a line: the parent sends SIGTERM exactly then. The child must
finish step 7, save it, end and exit with ``EXIT_PREEMPTED``; relaunched, it resumes from
step 7 and ends bit for bit where the uninterrupted training ends. A SIGKILL that lands
during that preemption save (held open by a fault point) loses nothing: the checkpoint of
step 5 is untouched and the relaunch resumes from it exactly.

The time from the signal to the durable checkpoint is printed as a figure, never asserted.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import trainhooks as th
from _support.reliability import (
    LINE_WAIT_SECONDS,
    Reference,
    assert_listing_clean,
    assert_restores_exactly,
    committed_digests,
    leftovers,
    report_figure,
)

TESTS = Path(__file__).resolve().parent.parent
CHILD = TESTS / "_support" / "preempt_child.py"
LAST_STEP, SAVE_STEPS, PAUSE_AT = 12, 5, 7


@dataclass
class Child:
    """One child process and the ``(event, step, time)`` lines it has said so far."""

    proc: subprocess.Popen[bytes]
    stderr_path: Path
    said: list[tuple[str, int, float]] = field(default_factory=list)

    def read_until(self, event: str, step: int | None = None) -> tuple[int, float]:
        """Read lines until ``event`` (at ``step``, if given); fail if the child ends first."""
        stdout: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        for raw in stdout:
            name, number, when = raw.decode().split()
            self.said.append((name, int(number), float(when)))
            if name == event and (step is None or int(number) == step):
                return int(number), float(when)
        self.proc.wait(timeout=LINE_WAIT_SECONDS)
        raise AssertionError(f"child ended before {event} {step}: {self.stderr()}")

    def finish(self) -> int:
        """Read everything left, wait for the exit; return the exit status."""
        assert self.proc.stdout is not None and self.proc.stdin is not None
        for raw in self.proc.stdout:
            name, number, when = raw.decode().split()
            self.said.append((name, int(number), float(when)))
        status = self.proc.wait(timeout=LINE_WAIT_SECONDS)
        self.proc.stdout.close()
        self.proc.stdin.close()
        return status

    def resume(self) -> None:
        """Let the paused step go on."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def events(self) -> list[tuple[str, int]]:
        return [(name, step) for name, step, _ in self.said]


def start_child(tmp_path: Path, directory: Path, **config: Any) -> Child:
    config = {
        "directory": str(directory),
        "last_step": LAST_STEP,
        "save_steps": SAVE_STEPS,
        **config,
    }
    stderr_path = tmp_path / f"child-{len(list(tmp_path.glob('child-*')))}.stderr"
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    env.pop("TRAINHOOKS_FAULTS", None)
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    return Child(proc, stderr_path)


def relaunch_to_the_end(tmp_path: Path, directory: Path, restored: int) -> None:
    child = start_child(tmp_path, directory)
    assert child.finish() == 0, child.stderr()
    events = child.events()
    assert events[0] == ("start", restored)
    assert ("done", LAST_STEP) in events
    assert [step for name, step in events if name == "step"] == list(
        range(restored + 1, LAST_STEP + 1)
    )


def test_sigterm_mid_step_saves_that_step_exits_75_and_the_relaunch_resumes_exactly(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "run"
    child = start_child(tmp_path, directory, pause_at=PAUSE_AT)
    child.read_until("paused", PAUSE_AT)
    signalled = time.monotonic()
    child.proc.send_signal(signal.SIGTERM)
    child.resume()
    status = child.finish()

    assert status == th.EXIT_PREEMPTED, child.stderr()
    after_signal = child.events()[child.events().index(("paused", PAUSE_AT)) + 1 :]
    assert after_signal == [("saving", PAUSE_AT), ("saved", PAUSE_AT)]  # no further step
    assert th.latest_checkpoint(directory).step == PAUSE_AT
    assert "preempted (SIGTERM)" in child.stderr()

    saved_at = next(t for name, step, t in child.said if (name, step) == ("saved", PAUSE_AT))
    step_starts = [t for name, _, t in child.said if name == "step"][:PAUSE_AT]
    save = {
        name: t for name, step, t in child.said if step == SAVE_STEPS and name.startswith("sav")
    }
    report_figure(
        "preemption_signal_to_durable_checkpoint",
        signal_to_durable_ms=round((saved_at - signalled) * 1e3, 2),
        step_ms=round(
            statistics.median(b - a for a, b in itertools.pairwise(step_starts)) * 1e3, 2
        ),
        save_ms=round((save["saved"] - save["saving"]) * 1e3, 2),
    )

    relaunch_to_the_end(tmp_path, directory, restored=PAUSE_AT)
    assert_restores_exactly(directory, Reference(), LAST_STEP)


def test_a_sigkill_during_the_preemption_save_loses_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    # Commits at steps 0 and 5 pass; the third (the preemption save of step 7) stops just
    # before its commit point until the SIGKILL below ends the process.
    child = start_child(tmp_path, directory, pause_at=PAUSE_AT, faults="before_rename=sleep:600@3")
    child.read_until("paused", PAUSE_AT)
    before = committed_digests(directory)
    child.proc.send_signal(signal.SIGTERM)
    child.resume()
    child.read_until("saving", PAUSE_AT)
    child.proc.send_signal(signal.SIGKILL)
    assert child.finish() == -signal.SIGKILL

    assert [info.step for info in assert_listing_clean(directory)] == [0, SAVE_STEPS]
    assert committed_digests(directory) == before  # the last committed checkpoint is intact
    relaunch_to_the_end(tmp_path, directory, restored=SAVE_STEPS)
    assert_restores_exactly(directory, Reference(), LAST_STEP)
    assert leftovers(directory) == set()
