"""Summaries are local files: a session checkpointing to a bucket writes no event files
(never a local directory named after the URL) unless ``summary_dir`` is given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import trainhooks as th


def _run(s3_url: str, summary_dir: Path | None) -> None:
    state = {"w": np.zeros(2, np.float32)}
    with th.MonitoredTrainingSession(
        checkpoint_dir=s3_url,
        summary_dir=summary_dir,
        state=state,
        save_summaries_steps=1,
        log_step_count_steps=1,
        save_checkpoint_steps=2,
        save_checkpoint_secs=None,
    ) as session:
        for _ in range(2):
            session.run(lambda: {"loss": float(state["w"].__iadd__(1.0)[0])})


def test_a_bucket_checkpoint_dir_writes_no_local_event_files(
    s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _run(s3_url, None)
    assert list(tmp_path.iterdir()) == []
    assert [c.step for c in th.list_checkpoints(s3_url)][-1] == 2
    _run(s3_url, tmp_path / "logs")
    assert list((tmp_path / "logs").glob("events.out.tfevents.*"))
