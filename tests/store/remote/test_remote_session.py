"""The session, its hooks and listeners end to end with ``checkpoint_dir="s3://..."``."""

from __future__ import annotations

import trainhooks
from _support.session import Counter, RecordingListener, save_pair
from trainhooks import CheckpointSaverHook, MonitoredTrainingSession


def test_training_session_saves_to_s3_and_resumes_from_it(s3_url: str) -> None:
    trace: list[str] = []
    counter = Counter()
    saver_hook = CheckpointSaverHook(
        s3_url, save_steps=2, listeners=[RecordingListener("L", trace)]
    )
    with MonitoredTrainingSession(
        checkpoint_dir=s3_url,
        state=counter.state,
        hooks=[saver_hook],
        save_checkpoint_secs=None,
        save_summaries_steps=None,
        log_step_count_steps=None,
    ) as sess:
        for _ in range(5):
            sess.run(counter.step)
    assert [e for e in trace if "save" in e][:4] == save_pair("L", 0, 2)
    steps = [c.step for c in trainhooks.list_checkpoints(s3_url)]
    assert steps[-1] == 5 and 2 in steps

    resumed = Counter()
    with MonitoredTrainingSession(
        checkpoint_dir=s3_url,
        state=resumed.state,
        save_checkpoint_steps=2,
        save_checkpoint_secs=None,
        save_summaries_steps=None,
        log_step_count_steps=None,
    ) as sess:
        assert sess.global_step == 5 and resumed.value == 5
        sess.run(resumed.step)
    assert trainhooks.latest_checkpoint(s3_url).step == 6  # type: ignore[union-attr]
