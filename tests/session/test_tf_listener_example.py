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


def test_tf_listener_example_in_async_mode_keeps_the_order_of_the_listener_calls(
    tmp_path: Path,
) -> None:
    """Each after_save runs once its checkpoint is durable, at a later step boundary; the
    listener reads the latest loss there, so the stop comes at step 40 (after_save(20) ran
    when step 40's save was due) or, with one more save, at a step in 41..60."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--async-save", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = done.stdout.splitlines()

    saves = (len(lines) - 3) // 2
    assert saves in (3, 4)
    assert lines == [
        "Starting the session.",
        *["About to write a checkpoint", "Done writing checkpoint."] * saves,
        "Done with the session.",
        lines[-1],
    ]
    last = int(lines[-1].split()[2].rstrip(","))
    assert (saves, last) == (3, 40) or (saves == 4 and 41 <= last <= 60)
    assert "w=3.000" in lines[-1]
    assert [info.step for info in list_checkpoints(tmp_path)] == [0, 20, 40, last][:saves]
