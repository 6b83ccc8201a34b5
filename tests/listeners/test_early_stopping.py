"""EarlyStoppingListener: stops through after_save when the metric stops improving."""

from __future__ import annotations

import pytest
import torch

import trainhooks as th
from _support.listeners import train_counter


class Recorder(th.CheckpointSaverListener):
    def __init__(self) -> None:
        self.trace: list[str] = []

    def after_save(self, session, global_step_value):
        self.trace.append(f"after_save({global_step_value})")

    def end(self, session, global_step_value):
        self.trace.append(f"end({global_step_value})")


LOSSES = {0: 5.0, 2: 3.0, 4: 2.0, 6: 2.5, 8: 2.1, 10: 1.0, 12: 3.0, 14: 3.0}


def test_stops_after_patience_evaluations_without_improvement(tmp_path):
    stopper = th.EarlyStoppingListener(
        "loss", patience=2, metric_fn=lambda s: {"loss": LOSSES[s.global_step]}
    )
    recorder = Recorder()
    last = train_counter(tmp_path, [stopper, recorder])
    # best 2.0 at step 4; 6 and 8 do not improve: stop at 8, and every listener still ran
    assert last == 8
    assert (stopper.best, stopper.best_step, stopper.stopped_step) == (2.0, 4, 8)
    assert recorder.trace[-2:] == ["after_save(8)", "end(8)"]  # no extra save at the end
    assert th.latest_checkpoint(tmp_path).step == 8


def test_min_delta_and_max_mode(tmp_path):
    accuracy = {0: 0.5, 2: 0.6, 4: 0.605, 6: 0.61, 8: 0.7}
    stopper = th.EarlyStoppingListener(
        "acc", patience=2, mode="max", min_delta=0.02, metric_fn=lambda s: accuracy[s.global_step]
    )
    assert train_counter(tmp_path, [stopper]) == 6


def test_only_evaluated_saves_count_with_an_evaluation_source(tmp_path):
    evaluator = th.EvaluationListener(lambda s: {"loss": LOSSES[s.global_step]}, every_n_saves=2)
    stopper = th.EarlyStoppingListener("loss", patience=1, source=evaluator)
    # evaluated saves: 2nd (step 2: 3.0), 4th (6: 2.5), 6th (10: 1.0), 8th (14: 3.0)
    assert train_counter(tmp_path, [evaluator, stopper]) == 14


def test_a_source_placed_after_it_is_reported(tmp_path):
    evaluator = th.EvaluationListener(lambda s: {"loss": 1.0})
    stopper = th.EarlyStoppingListener("loss", patience=1, source=evaluator)
    with pytest.warns(UserWarning, match="put it before"):
        train_counter(tmp_path, [stopper, evaluator], last_step=2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"patience": 0, "metric_fn": float},
        {"patience": 1, "mode": "up", "metric_fn": float},
        {"patience": 1},
        {"patience": 1, "metric_fn": float, "source": th.EvaluationListener(float)},
    ],
)
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        th.EarlyStoppingListener("loss", **kwargs)


def test_the_count_survives_a_restart_from_a_checkpoint(tmp_path):
    # best 2.0 at step 4; 6 does not improve; the run dies after step 7 (checkpoint 6)
    def stopper() -> th.EarlyStoppingListener:
        return th.EarlyStoppingListener(
            "loss", patience=2, metric_fn=lambda s: {"loss": LOSSES[s.global_step]}
        )

    weight = torch.zeros(())

    def run(listener: th.EarlyStoppingListener, crash_after: int | None = None) -> int:
        saver = th.CheckpointSaverHook(tmp_path, save_steps=2, listeners=[listener])
        with th.MonitoredTrainingSession(
            checkpoint_dir=tmp_path,
            state={"w": weight},
            chief_only_hooks=[saver],
            hooks=[th.StopAtStepHook(last_step=14)],
            save_summaries_steps=None,
            log_step_count_steps=None,
        ) as session:
            while not session.should_stop():
                session.run(lambda: weight.add_(1.0))
                if session.global_step == crash_after:
                    raise KeyboardInterrupt  # the session exits without end()
            return session.global_step

    with pytest.raises(KeyboardInterrupt):
        run(stopper(), crash_after=7)
    resumed = stopper()
    assert run(resumed) == 8  # as uninterrupted; a fresh count would run on to 14
    assert (resumed.best, resumed.best_step, resumed.stopped_step) == (2.0, 4, 8)
