"""The demo with ``TRAINHOOKS_DEMO_DIR=s3://...``: trained, killed and resumed against the
moto server, its checkpoints and best exports in the bucket (what ``make demo`` runs)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import trainhooks

DEMO = Path(__file__).resolve().parents[3] / "examples" / "demo_digits.py"


def test_the_demo_runs_on_a_bucket(s3_url: str, s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "TRAINHOOKS_DEMO_DIR": s3_url, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, str(DEMO), "--steps=80", "--save-every=20", "--kill-at=50"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # the summaries go to runs/demo-logs here
        timeout=240,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "killed the training process" in out and "resumed from step 40" in out
    assert "bit-identical to a run that was never interrupted: yes" in out
    assert re.search(r"final held-out accuracy at step 80: ([0-9.]+)", out)
    assert [c.step for c in trainhooks.list_checkpoints(s3_url)] == [0, 20, 40, 60, 80]
    bucket = s3_url.rsplit("/", 1)[0]
    exports = sorted(p.rsplit("/", 1)[1] for p in s3.find(f"{s3_url}/best"))
    assert len(exports) == 4 and all(n.startswith("best-") for n in exports)
    assert not s3.exists(f"{bucket}/run/.trainhooks.lease")  # released at the end
    assert (tmp_path / "runs" / "demo-logs" / "eval.jsonl").exists()
    assert list((tmp_path / "runs" / "demo-logs").glob("events.out.tfevents.*"))
