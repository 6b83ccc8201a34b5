"""A user's training script, written against the public API with full annotations.

``test_user_typing.py`` type-checks it with ``mypy --strict`` (it must pass cleanly) and
runs ``main`` (so the typed usage is also the working usage).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import trainhooks as th


class LossRecorder(th.SessionRunHook):
    """A user-written hook using only what ``HookSession`` offers."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.restored_from: th.CheckpointInfo | None = None
        self.released = False

    def after_create_session(self, session: th.HookSession, coord: Any) -> None:
        self.restored_from = session.restored_checkpoint
        assert session.checkpoint_dir is not None and session.steps_per_run == 1
        assert "w" in session.checkpoint_state  # what a saver hook would write

    def before_run(self, run_context: th.SessionRunContext) -> th.SessionRunArgs | None:
        return th.SessionRunArgs(fetches="loss")

    def after_run(self, run_context: th.SessionRunContext, run_values: th.SessionRunValues) -> None:
        self.losses.append(float(run_values.results))
        if run_context.session.global_step >= 1000:
            run_context.session.request_stop()

    def release(self) -> None:
        self.released = True


class StepLogger(th.CheckpointSaverListener):
    def __init__(self) -> None:
        self.saved: list[int] = []

    def after_save(self, session: th.HookSession, global_step_value: int) -> bool | None:
        self.saved.append(global_step_value)
        return None


def evaluate(session: th.HookSession) -> dict[str, float]:
    weights = session.state["w"]
    return {"norm": float(np.linalg.norm(weights))}


def train_step(w: np.ndarray[Any, Any], batch: float) -> Mapping[str, float]:
    w -= 0.1 * batch
    return {"loss": float(w.sum())}


def main(directory: Path) -> None:
    state: dict[str, Any] = {"w": np.ones(3), "rng": th.RNGState()}
    evaluator = th.EvaluationListener(evaluate)
    exporter = th.BestCheckpointExporter(
        "norm", mode="min", export_dir=directory / "best", source=evaluator
    )
    logger = StepLogger()
    recorder = LossRecorder()
    feed = th.FeedFnHook(lambda: {"batch": 1.0})
    hooks: list[th.SessionRunHook] = [th.StopAtStepHook(last_step=4), recorder, feed]
    with th.MonitoredTrainingSession(
        checkpoint_dir=directory,
        state=state,
        hooks=hooks,
        chief_only_hooks=[
            th.CheckpointSaverHook(
                directory, save_steps=2, listeners=[evaluator, exporter, logger], max_to_keep=3
            )
        ],
        save_summaries_steps=None,
        log_step_count_steps=None,
    ) as session:
        while not session.should_stop():
            session.run(train_step, state["w"])

    best: list[th.BestExport] = exporter.best
    # an export's path is a Path, or an ObjectPath (its URL) when export_dir is a URL
    assert best and isinstance(best[0].path, Path) and best[0].path.is_file()
    assert recorder.released and logger.saved == [0, 2, 4]

    latest = th.latest_checkpoint(directory)
    assert latest is not None and latest.step == 4
    restored: dict[str, Any] = {"w": np.zeros(3), "rng": th.RNGState()}
    with th.Saver(max_to_keep=None) as saver:
        info: th.CheckpointInfo = saver.restore(restored, directory)
        saver.save(restored, directory / "copy", info.step, metadata={"from": str(info.path)})
    assert np.array_equal(restored["w"], state["w"])
    plain = th.load(info.path)
    assert set(plain) >= {"w"}
    exported: Path = th.export_safetensors(info.path, directory / "w.safetensors", only="w")
    assert exported.is_file()
    checked = th.verify_checkpoint(info.path, progress=lambda done, total: None)
    kept = th.list_checkpoints(directory)
    assert checked.step == kept[-1].step == th.checkpoint_info(info.path).step

    def step_fn(context: th.StepContext) -> None:
        context.run_with_hooks(train_step, restored["w"], 1.0)
        context.request_stop()

    with th.SingularMonitoredSession(state=restored) as plain_session:
        plain_session.run_step_fn(step_fn)

    try:
        th.checkpoint_info(directory / "missing")
    except th.CheckpointNotFoundError as exc:
        assert exc.path is not None
    saver_protocol: th.SupportsSave = th.Saver()
    assert callable(saver_protocol.save)

    # preemption and rollback, as a preemptible job uses them
    guard = th.NanTensorHook("loss", rollback=True, max_rollbacks=2, spike_factor=10.0)
    try:
        with th.MonitoredTrainingSession(
            checkpoint_dir=directory / "preemptible",
            state=restored,
            hooks=[guard],
            save_checkpoint_steps=2,
            save_summaries_steps=None,
            preemption_signals=(),
        ) as preemptible:
            skipped: frozenset[int] = preemptible.skipped_steps
            assert not skipped and not preemptible.preempted
            preemptible.run(train_step, restored["w"], 1.0)
            preemptible.request_preemption()
    except th.Preempted as preempted:
        status: int = th.EXIT_PREEMPTED
        assert preempted.code == status and preempted.step == 1
    else:
        raise AssertionError("a preempted session leaves its with block with Preempted")
