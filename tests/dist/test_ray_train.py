"""examples/ray_train.py under Ray Train resumes bit-exactly from trainhooks' checkpoints.

Opt-in: Ray is not in the ``dev`` extra (it is large and a job takes a minute on the test
machine). ``make test-ray`` builds ``.venv-ray`` with the ``ray`` extra and runs this file
with ``TRAINHOOKS_RAY=1``; or run it from any interpreter that has the ``ray`` extra::

    TRAINHOOKS_RAY=1 python -m pytest tests/dist/test_ray_train.py

``TRAINHOOKS_RAY_PYTHON`` names another interpreter to run the example with (default: the
one running pytest). With ``TRAINHOOKS_RAY=1`` a missing Ray is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import trainhooks

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ray_train.py"

pytestmark = [
    pytest.mark.skipif(
        os.environ.get("TRAINHOOKS_RAY") != "1",
        reason="Ray Train test: set TRAINHOOKS_RAY=1 with the `ray` extra installed "
        "(pip install -e '.[ray]'), or run `make test-ray`",
    ),
    pytest.mark.timeout(1800),  # two Ray jobs; each takes 15-90 s depending on the load
]


@pytest.fixture(scope="module")
def python() -> str:
    """The interpreter with Ray; a missing Ray fails here, since the test was asked for."""
    python = os.environ.get("TRAINHOOKS_RAY_PYTHON", sys.executable)
    probe = subprocess.run(
        [python, "-c", "import ray.train.torch, trainhooks.distributed"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.fail(
            f"TRAINHOOKS_RAY=1 but {python} cannot import Ray Train and trainhooks: install "
            f"the `ray` extra (pip install -e '.[ray]') or run `make test-ray`.\n{probe.stderr}"
        )
    return python


def run_job(python: str, run: Path, until: int) -> dict[str, Any]:
    """Launch the example as a user would and return its ``RESULT`` line."""
    result = subprocess.run(
        [python, str(EXAMPLE), str(run), f"--until={until}", "--save-every=4"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, result.stdout + result.stderr
    return dict(json.loads(lines[-1].removeprefix("RESULT ")))


def test_relaunched_job_resumes_from_trainhooks_not_from_rays_pointer(
    python: str, tmp_path: Path
) -> None:
    run = tmp_path.resolve() / "run"  # the example prints resolved paths
    directory = run / "checkpoints"
    first = run_job(python, run, until=8)
    assert (first["resumed_from"], first["step"]) == (0, 8)
    newest = directory / "ckpt-000000000008"
    assert first["pointer"] == {"path": str(newest), "step": 8}
    assert [info.step for info in trainhooks.list_checkpoints(directory)] == [4, 8]
    for info in trainhooks.list_checkpoints(directory):  # one shard per worker, all verified
        assert trainhooks.verify_checkpoint(info.path).step == info.step
        shards = sorted(p.name for p in info.path.glob("shard-*"))
        assert shards == [f"shard-{r:05d}-of-00002.safetensors" for r in range(2)]

    # Ray's run state still points at step 8; trainhooks' directory is the authority, so
    # with step 8 gone the relaunch resumes from step 4 and retrains steps 5-8 exactly.
    shutil.rmtree(newest)
    second = run_job(python, run, until=8)
    assert (second["resumed_from"], second["step"]) == (4, 8)
    assert second["digest"] == first["digest"]
    assert second["pointer"] == {"path": str(newest), "step": 8}
    trainhooks.verify_checkpoint(newest)
