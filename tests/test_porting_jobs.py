"""docs/porting.md's complete examples resume bit-exactly after a SIGKILL mid-epoch.

``examples/porting_torch_job.py`` (AdamW, a cosine scheduler, a gradient scaler, a
``StatefulDataLoader``, dropout, evaluation, best export, early stopping) and
``examples/porting_jax_job.py`` (optax AdamW on a schedule, a typed key, step-derived
batches, the same listeners) each run once uninterrupted and once killed with SIGKILL
right after step 25, in the middle of their second epoch and five steps after the
checkpoint of step 20, then relaunched with the same command. The resumed run must train
on the same batches with the same losses, stop at the same step and end with a
bit-identical checkpoint, and the resume check must stay silent. The torch job relaunched
with its scheduler or its loader left out of ``state`` must be reported by the check.

Every job runs as its own process (they are what a user runs), all first runs at once and
then all relaunches at once, so the module costs about as much as three jobs in a row.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

import trainhooks
from _support.trees import assert_same_tree

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
KILL_AT, RESTORED = 25, 20  # the job saves every 10 steps
TIMEOUT = 240


@dataclass
class Run:
    """What one process of a job printed, and how it ended."""

    returncode: int
    stderr: str
    steps: dict[int, str] = field(default_factory=dict)  # step -> "loss <l> batch <indices>"
    done: int | None = None

    def resume_check_warnings(self) -> list[str]:
        return [
            line
            for line in self.stderr.splitlines()
            if line.startswith("WARNING trainhooks: resume check")
        ]

    def evaluations(self) -> dict[int, float]:
        """The validation loss of every evaluation, by step."""
        found = re.findall(r"eval at step (\d+): loss = ([0-9.e+-]+)", self.stderr)
        return {int(step): float(loss) for step, loss in found}


@dataclass
class Job:
    """One launch of an example, running in the background."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def wait(self) -> Run:
        returncode = self.process.wait(timeout=TIMEOUT)
        run = Run(returncode, self.stderr.read_text(errors="replace"))
        for line in self.stdout.read_text().splitlines():
            event, _, rest = line.partition(" ")
            if event == "step":
                step, _, values = rest.partition(" ")
                run.steps[int(step)] = values
            elif event == "done":
                run.done = int(rest)
        return run


def launch(script: str, directory: Path, log: str, *args: str) -> Job:
    """Start ``examples/<script> --dir <directory> <args>`` as a user would; its output
    goes to ``<log>.out`` and ``<log>.err`` beside ``directory``."""
    stdout, stderr = directory.parent / f"{log}.out", directory.parent / f"{log}.err"
    # one thread per process: these jobs run side by side on a small machine; every run
    # of a comparison has the same setting, so the arithmetic is the same
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), "--dir", str(directory), *args],
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,
        )
    return Job(process, stdout, stderr)


TORCH, JAX = "porting_torch_job.py", "porting_jax_job.py"
# name: (script, extra arguments of both launches)
JOBS: dict[str, tuple[str, tuple[str, ...]]] = {
    "torch": (TORCH, ()),
    "torch-no-scheduler": (TORCH, ("--leave-out", "scheduler")),
    "torch-no-loader": (TORCH, ("--leave-out", "loader")),
    "jax": (JAX, ()),
}


@dataclass
class Results:
    root: Path
    reference: dict[str, Run]  # uninterrupted, for "torch" and "jax"
    killed: dict[str, Run]
    resumed: dict[str, Run]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Results:
    root = tmp_path_factory.mktemp("porting-jobs")
    first = {
        name: launch(script, root / name, f"{name}-killed", "--kill-at-step", str(KILL_AT), *args)
        for name, (script, args) in JOBS.items()
    }
    references = {
        name: launch(JOBS[name][0], root / f"{name}-reference", f"{name}-reference")
        for name in ("torch", "jax")
    }
    killed = {name: job.wait() for name, job in first.items()}
    reference = {name: job.wait() for name, job in references.items()}
    relaunched = {
        name: launch(script, root / name, f"{name}-resumed", *args)
        for name, (script, args) in JOBS.items()
    }
    resumed = {name: job.wait() for name, job in relaunched.items()}
    return Results(root, reference, killed, resumed)


def final_checkpoint(directory: Path, step: int) -> dict[str, Any]:
    latest = trainhooks.latest_checkpoint(directory)
    assert latest is not None and latest.step == step
    return trainhooks.load(latest.path)


def best_exports(directory: Path) -> dict[str, dict[str, np.ndarray]]:
    return {p.name: load_file(p) for p in sorted((directory / "best").glob("*.safetensors"))}


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_job_killed_mid_epoch_resumes_bit_exactly_with_a_silent_resume_check(
    results: Results, name: str
) -> None:
    reference, killed, resumed = (
        results.reference[name],
        results.killed[name],
        results.resumed[name],
    )
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # early stopping ends the reference run well after the kill
    assert reference.done is not None and KILL_AT < reference.done < 150
    assert sorted(reference.steps) == list(range(1, reference.done + 1))

    assert killed.steps == {s: reference.steps[s] for s in range(1, KILL_AT + 1)}
    assert f"restored global step {RESTORED} from" in resumed.stderr
    assert resumed.steps == {s: reference.steps[s] for s in range(RESTORED + 1, reference.done + 1)}

    # The stop step is the same because the best validation loss so far is reached at the
    # restored checkpoint or later: an EarlyStoppingListener that starts counting afresh
    # in the resumed session counts the same evaluations as the uninterrupted one.
    losses = reference.evaluations()
    assert losses[RESTORED] < min(loss for step, loss in losses.items() if step < RESTORED)
    assert resumed.done == reference.done

    directory, reference_dir = results.root / name, results.root / f"{name}-reference"
    want = final_checkpoint(reference_dir, reference.done)
    got = final_checkpoint(directory, reference.done)
    assert_same_tree(got, want, "checkpoint")  # weights, optimizer, scheduler, loader, RNG...
    exports, expected_exports = best_exports(directory), best_exports(reference_dir)
    assert exports.keys() == expected_exports.keys() and len(exports) == 2
    for file, tensors in expected_exports.items():
        assert_same_tree(exports[file], tensors, file)

    assert resumed.resume_check_warnings() == []
    assert f"resume check: 4 re-run step(s) after checkpoint {RESTORED} match" in resumed.stderr


def test_resume_check_reports_a_scheduler_left_out_of_state(results: Results) -> None:
    resumed = results.resumed["torch-no-scheduler"]
    assert results.killed["torch-no-scheduler"].returncode == -signal.SIGKILL
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    [warning] = resumed.resume_check_warnings()
    # step 21 uses the learning rate the restored optimizer holds; the fresh scheduler sets
    # another one after it, so step 22's update and thus step 23's loss differ
    assert f"step 23, re-run after restoring checkpoint {RESTORED}" in warning
    assert "Earlier re-run steps matched" in warning and "scheduler" in warning


def test_resume_check_reports_a_loader_left_out_of_state(results: Results) -> None:
    resumed = results.resumed["torch-no-loader"]
    assert results.killed["torch-no-loader"].returncode == -signal.SIGKILL
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    [warning] = resumed.resume_check_warnings()
    # a fresh loader starts the first epoch again: the first re-run batch is another one
    assert f"step 21, re-run after restoring checkpoint {RESTORED}" in warning
    assert "The first re-run step already differs" in warning and "data position" in warning
