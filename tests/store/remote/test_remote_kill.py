"""A writer SIGKILLed at each moment of an upload leaves the previous checkpoint intact,
and the next writer cleans what it left (data objects, pending multipart uploads)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import trainhooks

_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from trainhooks import Saver

    url, step, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    saver = Saver(max_to_keep=None)
    saver.save({"x": np.full(size, step, np.float32)}, url, step)
    print("saved", flush=True)
    """
)


def _save_in_child(url: str, step: int, faults: str, size: int = 1000) -> int:
    env = {**os.environ, "TRAINHOOKS_FAULTS": faults}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, url, str(step), str(size)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.returncode


def _save_here(url: str, step: int) -> None:
    with trainhooks.Saver(max_to_keep=None) as saver:
        saver.save({"x": np.full(1000, step, np.float32)}, url, step)


@pytest.mark.parametrize(
    ("point", "committed"),
    [
        ("remote_after_data", False),
        ("remote_before_manifest", False),
        ("remote_after_manifest", True),
    ],
)
def test_kill_during_upload_keeps_previous_and_cleans_leftovers(
    s3_url: str,
    s3,
    point: str,
    committed: bool,  # type: ignore[no-untyped-def]
) -> None:
    _save_here(s3_url, 1)
    assert _save_in_child(s3_url, 2, f"{point}=kill") == -signal.SIGKILL
    steps = [c.step for c in trainhooks.list_checkpoints(s3_url)]
    assert steps == ([1, 2] if committed else [1])
    assert float(trainhooks.load(f"{s3_url}/ckpt-000000000001")["x"][0]) == 1.0
    # the next writer (the killed one's lease names a dead pid on this host) cleans up
    _save_here(s3_url, 3)
    left = [p for p in s3.find(s3_url) if "/ckpt-000000000002/" in p]
    assert len(left) == (2 if committed else 0)
    assert [c.step for c in trainhooks.list_checkpoints(s3_url)] == [*steps, 3]


def test_kill_mid_multipart_upload_aborts_it_at_the_next_writer(s3_url: str, s3) -> None:  # type: ignore[no-untyped-def]
    bucket = s3_url.split("/")[2]
    size = 40 * 1024 * 1024 // 4  # 40 MiB: a multipart upload of 3 parts
    assert _save_in_child(s3_url, 1, "remote_after_part=kill@1", size) == -signal.SIGKILL
    pending = s3.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])
    assert len(pending) == 1
    assert trainhooks.list_checkpoints(s3_url) == []
    _save_here(s3_url, 2)
    assert s3.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", []) == []
    restored = {"x": np.zeros(1000, np.float32)}
    assert trainhooks.Saver().restore(restored, s3_url).step == 2
