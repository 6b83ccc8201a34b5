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
        [sys.executable, str(DEMO), "--steps=40", "--save-every=20", "--kill-at=30"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # the summaries go to runs/demo-logs here
        timeout=240,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "killed the training process" in out and "resumed from step 20" in out
    assert "bit-identical to a run that was never interrupted: yes" in out
    assert re.search(r"final held-out accuracy at step 40: ([0-9.]+)", out)
    assert [c.step for c in trainhooks.list_checkpoints(s3_url)] == [0, 20, 40]
    exports = sorted(p.rsplit("/", 1)[1] for p in s3.find(f"{s3_url}/best"))
    assert exports == [f"best-{s:012d}.{x}" for s in (20, 40) for x in ("json", "safetensors")]
    assert not s3.exists(f"{s3_url}/.trainhooks.lease")  # released at the end
    assert (tmp_path / "runs" / "demo-logs" / "eval.jsonl").exists()
    assert list((tmp_path / "runs" / "demo-logs").glob("events.out.tfevents.*"))


def test_the_demo_refuses_to_delete_objects_it_did_not_write(s3_url: str, s3) -> None:  # type: ignore[no-untyped-def]
    s3.pipe_file(f"{s3_url}/thesis.tex", b"precious")
    done = subprocess.run(
        [sys.executable, str(DEMO), f"--dir={s3_url}", "--no-crash"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "did not write" in done.stderr
    assert s3.cat_file(f"{s3_url}/thesis.tex") == b"precious"
