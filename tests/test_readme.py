"""The README's examples run as written (with a shorter training run)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_opens_with_the_two_setup_commands():
    lines = [line for line in README.read_text().splitlines() if line.startswith("make ")]
    assert [line.split()[:2] for line in lines[:2]] == [["make", "demo"], ["make", "test"]]


def test_readme_training_example_runs_and_resumes(tmp_path: Path):
    session, store = _python_blocks()[:2]
    program = session.replace("last_step=1000", "last_step=250") + "\n" + store
    first = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert first.returncode == 0, first.stderr
    assert "saved step 250" in first.stdout
    again = subprocess.run(
        [sys.executable, "-c", session.replace("last_step=1000", "last_step=300")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert again.returncode == 0, again.stderr
    assert "saved step 0" not in again.stdout  # resumed, not restarted
    assert "saved step 300" in again.stdout
