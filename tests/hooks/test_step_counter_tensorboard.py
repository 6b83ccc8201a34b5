"""StepCounterHook's TensorBoard output (global_step/sec), read back with TensorBoard."""

from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import trainhooks as th


def test_steps_per_second_are_written_to_output_dir(tmp_path):
    hook = th.StepCounterHook(every_n_steps=5, output_dir=tmp_path)
    with th.MonitoredSession(hooks=[hook, th.StopAtStepHook(last_step=16)]) as session:
        while not session.should_stop():
            session.run(lambda: None)
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    events = accumulator.Scalars("global_step/sec")
    # the first trigger (step 1) only starts the measurement
    assert [e.step for e in events] == [6, 11, 16]
    assert all(e.value > 0 for e in events)


def test_it_shares_one_event_file_with_the_summary_saver(tmp_path):
    hooks = [
        th.StepCounterHook(every_n_steps=2, output_dir=tmp_path),
        th.SummarySaverHook(save_steps=2, output_dir=tmp_path),
        th.StopAtStepHook(last_step=6),
    ]
    with th.MonitoredSession(hooks=hooks) as session:
        while not session.should_stop():
            session.run(lambda: {"loss": 1.0})
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    assert sorted(accumulator.Tags()["scalars"]) == ["global_step/sec", "loss"]


def test_without_output_dir_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hook = th.StepCounterHook(every_n_steps=1)
    with th.MonitoredSession(hooks=[hook, th.StopAtStepHook(last_step=3)]) as session:
        while not session.should_stop():
            session.run(lambda: None)
    assert list(tmp_path.iterdir()) == []
