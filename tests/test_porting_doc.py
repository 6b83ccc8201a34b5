"""docs/porting.md's examples run as written and resume where they stopped; the
step-derived one then ends with exactly the weights of an uninterrupted run. The lines
quoted from the complete examples are the scripts' own (the scripts themselves are
killed and resumed by tests/test_porting_jobs.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import trainhooks

ROOT = Path(__file__).resolve().parents[1]
PORTING = ROOT / "docs" / "porting.md"
# The session says where it restored from at INFO level; the test makes that visible.
SHOW_RESTORES = "import logging\nlogging.basicConfig(level=logging.INFO)\n"


def python_blocks(section: str) -> list[str]:
    """The ```python blocks of one ``## section`` of porting.md, in order."""
    text = PORTING.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start : end if end != -1 else None], re.S)


def run_program(program: str, cwd: Path) -> str:
    """Run ``program`` as a user would (a fresh interpreter in ``cwd``); its stderr."""
    cwd.mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", SHOW_RESTORES + program],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def final_weights(run_dir: Path, entry: str) -> dict[str, np.ndarray]:
    latest = trainhooks.latest_checkpoint(run_dir)
    assert latest is not None and latest.step == 200
    return trainhooks.load(latest.path)[entry]


def test_torch_loader_example_stopped_midway_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    """The program runs as written and resumes; that the resumed batches and weights are
    exact is proven, for the same loader recipe, by tests/state/test_data_position.py."""
    program = python_blocks("Data position")[0]
    assert "last_step=200" in program
    run_program(program.replace("last_step=200", "last_step=90"), tmp_path)
    log = run_program(program, tmp_path)
    assert "restored global step 90" in log  # the second run resumed, it did not start over
    assert final_weights(tmp_path / "runs/loader", "model").keys() == {"weight", "bias"}


def test_step_derived_example_stopped_midway_ends_with_the_uninterrupted_weights(
    tmp_path: Path,
) -> None:
    program = python_blocks("Data position")[1]
    assert "last_step=200" in program
    run_program(program, tmp_path / "uninterrupted")
    run_program(program.replace("last_step=200", "last_step=90"), tmp_path / "resumed")
    log = run_program(program, tmp_path / "resumed")
    assert "restored global step 90" in log

    want = final_weights(tmp_path / "uninterrupted/runs/steps", "params")
    got = final_weights(tmp_path / "resumed/runs/steps", "params")
    assert got["w"].tobytes() == want["w"].tobytes()


def code_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def quoted_in(block: str, script: str) -> bool:
    """Whether each part of ``block`` between ``...`` lines is a run of consecutive lines
    of ``script`` (indentation aside), the parts in the script's order."""
    lines, position = code_lines(script), 0
    for part in re.split(r"^\.\.\.$", block, flags=re.M):
        wanted = code_lines(part)
        starts = range(position, len(lines) - len(wanted) + 1)
        found = next((i for i in starts if lines[i : i + len(wanted)] == wanted), None)
        if found is None:
            return False
        position = found + len(wanted)
    return True


def test_complete_examples_quote_the_scripts_they_point_at() -> None:
    torch_block, jax_block = python_blocks("Complete examples")
    assert quoted_in(torch_block, (ROOT / "examples/porting_torch_job.py").read_text())
    assert quoted_in(jax_block, (ROOT / "examples/porting_jax_job.py").read_text())
    assert not quoted_in(torch_block, (ROOT / "examples/porting_jax_job.py").read_text())
