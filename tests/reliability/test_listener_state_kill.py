"""A run SIGKILLed and resumed stops early at the same step as an uninterrupted one.

The issue this proves fixed: ``EarlyStoppingListener`` forgot its patience count on
restart, so the uninterrupted run stopped at step 250 and the killed-and-resumed one at
300 (a job preempted more often than patience x save interval never stopped early). A
real training process (``child_train.py``, mode ``early_stop``: evaluator, early stopper,
best-model exporter) is killed with a real SIGKILL in the ``after_save`` of the last save
before the reference stop: right after that checkpoint's commit, before any listener ran
for it, or after all of them. The resumed run must stop at the same step, have recorded
each evaluation once, and keep the same best exports.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from _support.reliability import Zygote

PATIENCE = 3
SAVE_STEPS = 5


def config(root: Path, **extra: Any) -> dict[str, Any]:
    return {
        "mode": "early_stop",
        "directory": str(root / "ckpt"),
        "eval_dir": str(root / "eval"),
        "export_dir": str(root / "best"),
        "patience": PATIENCE,
        "save_steps": SAVE_STEPS,
        "last_step": 2000,  # never reached: only the early stop ends these runs
        "marker_len": 16,
        **extra,
    }


def run_worker(zygote: Zygote, cfg: dict[str, Any]) -> tuple[dict[str, int], int]:
    """Run one worker to its exit: its ``event -> step`` lines and its wait status."""
    pid = zygote.spawn(cfg)
    events: dict[str, int] = {}
    while True:
        event, value = zygote.next_event()
        if event == "exit":
            exited, status = map(int, value.split())
            assert exited == pid
            return events, status
        events[event] = int(value)


def evaluated_steps(root: Path) -> list[int]:
    lines = (root / "eval" / "eval.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


def exported_steps(root: Path) -> list[int]:
    return sorted(json.loads(p.read_text())["step"] for p in (root / "best").glob("best-*.json"))


@pytest.fixture(scope="module")
def uninterrupted(zygote: Zygote, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("uninterrupted")
    events, status = run_worker(zygote, config(root))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, zygote.log_tail()
    assert events["stopped"] == events["done"] > PATIENCE * SAVE_STEPS  # it did stop early
    return root


@pytest.mark.parametrize("kill_where", ["before", "after"])
def test_a_killed_and_resumed_run_stops_at_the_uninterrupted_step(
    zygote: Zygote, uninterrupted: Path, tmp_path: Path, kill_where: str
) -> None:
    stop = evaluated_steps(uninterrupted)[-1]
    kill_at = stop - SAVE_STEPS  # patience - 1 evaluations without improvement so far

    events, status = run_worker(zygote, config(tmp_path, kill_at=kill_at, kill_where=kill_where))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9, zygote.log_tail()
    assert "done" not in events

    resumed, status = run_worker(zygote, config(tmp_path))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, zygote.log_tail()
    assert resumed["start"] == kill_at
    assert resumed["stopped"] == resumed["done"] == stop  # without the saved count: later
    assert evaluated_steps(tmp_path) == evaluated_steps(uninterrupted)  # each one once
    assert exported_steps(tmp_path) == exported_steps(uninterrupted)
