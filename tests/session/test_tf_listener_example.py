"""TF's documentation example of CheckpointSaverListener runs unchanged but for the import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from trainhooks import list_checkpoints

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tf_listener_example.py"


def test_tf_listener_example_prints_each_listener_call_and_stops_from_after_save(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = done.stdout.splitlines()

    # saves at 0, 20 and 40; the listener asks to stop after 40 (loss converged)
    assert lines[:8] == [
        "Starting the session.",
        *["About to write a checkpoint", "Done writing checkpoint."] * 3,
        "Done with the session.",
    ]
    assert lines[8].startswith("global step 40, ")
    assert "w=3.000" in lines[8]
    assert [info.step for info in list_checkpoints(tmp_path)] == [0, 20, 40]
