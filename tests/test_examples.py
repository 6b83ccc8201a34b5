"""The examples run as a user runs them: as subprocesses, checked by their output."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import trainhooks as th
from _support.reliability import long_only
from _support.trees import assert_same_tree

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_demo_is_killed_midway_resumes_and_learns(tmp_path):
    run_dir = tmp_path / "demo"
    out = run_example(
        "demo_digits.py", f"--dir={run_dir}", "--steps=200", "--save-every=40", "--kill-at=100"
    )
    assert "killed the training process" in out
    assert "resumed from step 80" in out
    assert "this run ran steps 81–200 only" in out
    assert "bit-identical to a run that was never interrupted: yes" in out
    accuracy = float(re.search(r"final held-out accuracy at step 200: ([0-9.]+)", out)[1])
    assert accuracy > 0.9
    assert len(list((run_dir / "best").glob("best-*.safetensors"))) == 2
    assert list(run_dir.glob("events.out.tfevents.*"))

    # --resume continues the finished run in the same directory for more steps
    out = run_example(
        "demo_digits.py", f"--dir={run_dir}", "--steps=240", "--save-every=40", "--resume"
    )
    assert "resumed from step 200" in out
    assert "final held-out accuracy at step 240" in out


def test_demo_with_background_saves_is_killed_midway_resumes_and_learns(tmp_path):
    """--async-save: the kill at step 100 may land before the save of step 80 is durable
    (then the run resumes from 40); either way it ends bit-identical and learns."""
    run_dir = tmp_path / "demo"
    out = run_example(
        "demo_digits.py",
        f"--dir={run_dir}",
        "--steps=200",
        "--save-every=40",
        "--kill-at=100",
        "--async-save",
    )
    assert "killed the training process" in out
    resumed = int(re.search(r"resumed from step (\d+)", out)[1])
    assert resumed in (40, 80)
    assert f"this run ran steps {resumed + 1}–200 only" in out
    assert "bit-identical to a run that was never interrupted: yes" in out
    assert float(re.search(r"final held-out accuracy at step 200: ([0-9.]+)", out)[1]) > 0.9
    assert len(list((run_dir / "best").glob("best-*.safetensors"))) == 2


def test_demo_refuses_to_delete_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo_digits.py"), f"--dir={tmp_path}", "--no-crash"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "did not write" in result.stderr
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_numpy_loop_trains_resumes_and_recovers_the_weights(tmp_path):
    out = run_example("numpy_jax_loop.py", f"--dir={tmp_path}", "--steps=200", "--numpy")
    assert "resumed from step 100" in out
    mse = float(re.search(r"final validation mse: ([0-9.]+)", out)[1])
    assert mse < 0.05
    assert "checkpoints on disk: [0, 50, 100, 150, 200]" in out


def test_numpy_loop_uses_jax_when_it_is_installed(tmp_path):
    try:
        import jax  # noqa: F401

        backend = "JAX"
    except ImportError:
        backend = "NumPy"
    out = run_example("numpy_jax_loop.py", f"--dir={tmp_path}", "--steps=100")
    assert f"backend: {backend}" in out
    assert "resumed from step 50" in out
    assert float(re.search(r"final validation mse: ([0-9.]+)", out)[1]) < 0.05


def test_preemptible_job_saves_on_sigterm_exits_75_and_the_relaunch_resumes_exactly(tmp_path):
    reference_dir, job_dir = tmp_path / "reference", tmp_path / "job"
    out = run_example("preemptible_job.py", f"--dir={reference_dir}")
    assert "finished at step 4000" in out

    # With --log-every=1 the job prints 4000 lines (~96 KB), more than a pipe holds: it
    # cannot reach its end before this test reads past step 20, so the SIGTERM sent then
    # always lands in the middle of the run.
    job = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "preemptible_job.py"), f"--dir={job_dir}", "--log-every=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert job.stdout is not None
    for line in job.stdout:
        if line.startswith("step 20 "):
            job.send_signal(signal.SIGTERM)
            break
    out, err = job.communicate(timeout=240)
    assert job.returncode == th.EXIT_PREEMPTED == 75, err
    preempted = int(re.search(r"preempted at step (\d+): checkpoint saved", out)[1])
    assert 20 <= preempted < 4000
    assert "finished" not in out
    assert th.latest_checkpoint(job_dir).step == preempted

    out = run_example("preemptible_job.py", f"--dir={job_dir}")
    assert f"started at step {preempted}" in out
    assert "finished at step 4000" in out
    want = th.load(th.latest_checkpoint(reference_dir).path)
    got = th.load(th.latest_checkpoint(job_dir).path)
    assert_same_tree(got, want)


@long_only  # two torchrun launches of 2 ranks (~10 s); the session itself is tested in dist/
def test_torchrun_ddp_example_trains_and_resumes_on_relaunch(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc-per-node", "2"]
    command += [str(EXAMPLES / "torchrun_ddp.py"), str(tmp_path / "run")]
    outputs = []
    for _ in range(2):
        result = subprocess.run(command, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stdout + result.stderr
        outputs.append(result.stdout)
    assert "rank 0: steps 0 -> 25" in outputs[0] and "rank 1: steps 0 -> 25" in outputs[0]
    assert "rank 0: steps 25 -> 50" in outputs[1] and "rank 1: steps 25 -> 50" in outputs[1]
    assert "rank 0: checkpoint of step 50 committed" in outputs[1]
    assert [i.step for i in th.list_checkpoints(tmp_path / "run")] == [20, 25, 35, 45, 50]
