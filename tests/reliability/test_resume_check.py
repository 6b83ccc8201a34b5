"""The resume check after a real SIGKILL: silent with complete state, loud when state is missing.

One child process trains three variants (``_resume_child.py``), each killed with SIGKILL at
the start of step 15, four steps after its checkpoint at step 10. This process then
resumes each directory with the same code and checks what ``ResumeCheckHook`` says.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import trainhooks
from _support import resume_child
from _support.reliability import LINE_WAIT_SECONDS

CHILD = Path(resume_child.__file__)
VARIANTS = ("complete", "no_scheduler", "no_data_position")
KILL_AT, CHECKPOINT, LAST = 15, 10, 20


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One checkpoint directory per variant, left by a run SIGKILLed at step ``KILL_AT``."""
    root = tmp_path_factory.mktemp("resume-check")
    configs = [
        {"variant": v, "directory": str(root / v), "last_step": LAST, "kill_at": KILL_AT}
        for v in VARIANTS
    ]
    done = subprocess.run(
        [sys.executable, str(CHILD), json.dumps(configs)],
        capture_output=True,
        text=True,
        timeout=LINE_WAIT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    statuses = [int(line.split()[2]) for line in done.stdout.splitlines()]
    assert len(statuses) == len(VARIANTS), done.stdout + done.stderr[-3000:]
    for status in statuses:
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, done.stderr
    return {v: root / v for v in VARIANTS}


def resume(directory: Path, variant: str, **config: Any) -> int:
    return resume_child.train(
        {"variant": variant, "directory": str(directory), "last_step": LAST, **config}
    )


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "resume check" in r.getMessage()
    ]


def test_complete_state_resumes_silently_after_sigkill(
    crashed: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    assert trainhooks.latest_checkpoint(crashed["complete"]).step == CHECKPOINT
    with caplog.at_level(logging.INFO, logger="trainhooks"):
        assert resume(crashed["complete"], "complete") == LAST
    assert warnings_of(caplog) == []
    matched = [r.getMessage() for r in caplog.records if "match the run" in r.getMessage()]
    # steps 11-14 were journalled before the kill, and all four were compared
    assert matched == [
        "resume check: 4 re-run step(s) after checkpoint 10 match the run that wrote it"
    ]


def test_forgotten_scheduler_is_reported_with_step_and_both_values(
    crashed: dict[str, Path], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    directory = tmp_path / "copy"
    shutil.copytree(crashed["no_scheduler"], directory)
    with caplog.at_level(logging.WARNING, logger="trainhooks"):
        assert resume(directory, "no_scheduler") == LAST
    [message] = warnings_of(caplog)
    # the restarted schedule sets another rate after step 11; the loss of 13 shows it
    assert "step 13, re-run after restoring checkpoint 10" in message
    assert "'loss' = " in message and "but the run that wrote that checkpoint returned" in message
    assert "Earlier re-run steps matched" in message and "scheduler" in message


def test_forgotten_data_position_is_caught_at_the_first_re_run_step(
    crashed: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="trainhooks"):
        assert resume(crashed["no_data_position"], "no_data_position") == LAST
    [message] = warnings_of(caplog)
    assert "step 11, re-run after restoring checkpoint 10" in message
    assert "The first re-run step already differs" in message and "data position" in message


def test_on_divergence_raise_raises_the_typed_error(
    crashed: dict[str, Path], tmp_path: Path
) -> None:
    directory = tmp_path / "copy"
    shutil.copytree(crashed["no_scheduler"], directory)
    with pytest.raises(trainhooks.ResumeDivergenceError) as caught:
        resume(directory, "no_scheduler", on_divergence="raise")
    error = caught.value
    assert (error.step, error.checkpoint_step, error.name) == (13, CHECKPOINT, "loss")
    assert error.recorded is not None and error.observed is not None
    assert error.recorded != error.observed
    assert isinstance(error, trainhooks.TrainhooksError)
