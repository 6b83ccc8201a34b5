"""BestCheckpointExporter: the best k checkpoints as standalone safetensors + JSON files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

import trainhooks as th

SCORES = {0: 0.1, 2: 0.5, 4: 0.3, 6: 0.9, 8: 0.7, 10: 0.2}


def train(ckpt_dir, listeners: list, last_step: int = 10) -> None:
    """Real session, real torch module: step s leaves every weight equal to s."""
    model = torch.nn.Linear(3, 2)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    saver_hook = th.CheckpointSaverHook(ckpt_dir, save_steps=2, listeners=listeners)

    def step() -> None:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)

    with th.MonitoredTrainingSession(
        checkpoint_dir=ckpt_dir,
        state={"model": model},
        chief_only_hooks=[saver_hook],
        hooks=[th.StopAtStepHook(last_step=last_step)],
        save_summaries_steps=None,
        log_step_count_steps=None,
    ) as session:
        while not session.should_stop():
            session.run(step)


def score(session: th.MonitoredSession) -> dict:
    return {"acc": SCORES[session.global_step]}


def exported_steps(export_dir) -> list[int]:
    return sorted(json.loads(p.read_text())["step"] for p in export_dir.glob("best-*.json"))


def test_keeps_the_best_k_by_the_metric(tmp_path):
    exporter = th.BestCheckpointExporter(
        "acc", keep=2, export_dir=tmp_path / "best", metric_fn=score
    )
    train(tmp_path / "ckpt", [exporter])
    assert exported_steps(tmp_path / "best") == [6, 8]
    assert [(e.step, e.value) for e in exporter.best] == [(6, 0.9), (8, 0.7)]
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == [
        "best-000000000006.json",
        "best-000000000006.safetensors",
        "best-000000000008.json",
        "best-000000000008.safetensors",
    ]


def test_an_export_is_a_standalone_safetensors_file_with_json_metadata(tmp_path):
    exporter = th.BestCheckpointExporter("acc", export_dir=tmp_path / "best", metric_fn=score)
    train(tmp_path / "ckpt", [exporter])
    best = exporter.best[0]
    meta = json.loads(best.metadata_path.read_text())
    assert meta["step"] == 6 and meta["value"] == 0.9 and meta["metric"] == "acc"
    assert meta["mode"] == "max" and meta["safetensors"] == best.path.name
    with safe_open(best.path, framework="numpy") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        assert f.metadata()["trainhooks_step"] == "6"
    weight = next(v for k, v in tensors.items() if k.endswith("weight"))
    np.testing.assert_array_equal(weight, np.full((2, 3), 6.0, dtype=np.float32))


def test_min_mode_with_an_evaluation_source(tmp_path):
    evaluator = th.EvaluationListener(score)
    exporter = th.BestCheckpointExporter(
        "acc", mode="min", keep=1, export_dir=tmp_path / "best", source=evaluator
    )
    train(tmp_path / "ckpt", [evaluator, exporter])
    assert exported_steps(tmp_path / "best") == [0]


def test_a_restarted_run_competes_with_the_exports_already_there(tmp_path):
    first = th.BestCheckpointExporter("acc", export_dir=tmp_path / "best", metric_fn=score)
    train(tmp_path / "ckpt", [first], last_step=4)
    assert exported_steps(tmp_path / "best") == [2]
    # the second run restores step 4 and goes on; only 6 (0.9) beats the kept 0.5
    second = th.BestCheckpointExporter("acc", export_dir=tmp_path / "best", metric_fn=score)
    train(tmp_path / "ckpt", [second], last_step=10)
    assert exported_steps(tmp_path / "best") == [6]
    assert [(e.step, e.value) for e in second.best] == [(6, 0.9)]


def test_leftovers_of_an_interrupted_export_are_cleaned_and_foreign_files_kept(tmp_path):
    best = tmp_path / "best"
    best.mkdir()
    (best / "best-000000000099.safetensors").write_bytes(b"never committed by its json")
    (best / ".best-000000000098.json.tmp-0123abcd").write_text("{")
    (best / "notes.txt").write_text("mine")
    exporter = th.BestCheckpointExporter("acc", export_dir=best, metric_fn=score)
    train(tmp_path / "ckpt", [exporter], last_step=2)
    assert sorted(p.name for p in best.iterdir()) == [
        "best-000000000002.json",
        "best-000000000002.safetensors",
        "notes.txt",
    ]


def test_a_failing_export_reaches_the_user_and_keeps_the_checkpoint(tmp_path):
    best = tmp_path / "best"

    def score_then_lose_the_export_directory(session: th.MonitoredSession) -> dict:
        if session.global_step == 2:  # e.g. a network mount vanished
            shutil.rmtree(best)
            best.write_text("a file where the export directory was")
        return score(session)

    exporter = th.BestCheckpointExporter(
        "acc", export_dir=best, metric_fn=score_then_lose_the_export_directory
    )
    with pytest.raises(th.CheckpointWriteError, match="Not a directory") as info:
        train(tmp_path / "ckpt", [exporter])
    assert any(
        "BestCheckpointExporter.after_save() at step 2" in note for note in info.value.__notes__
    )
    checkpoints = th.list_checkpoints(tmp_path / "ckpt")
    assert [c.step for c in checkpoints] == [0, 2]
    for checkpoint in checkpoints:
        th.verify_checkpoint(checkpoint.path)


@pytest.mark.parametrize(
    "kwargs",
    [{"mode": "best", "metric_fn": score}, {"keep": 0, "metric_fn": score}, {}],
)
def test_bad_arguments_are_rejected(tmp_path, kwargs):
    with pytest.raises(ValueError):
        th.BestCheckpointExporter("acc", export_dir=tmp_path, **kwargs)


CHILD = """
import sys
import numpy as np
import trainhooks as th

ckpt_dir, export_dir = sys.argv[1], sys.argv[2]
state = {"w": np.zeros(4, dtype=np.float32)}
exporter = th.BestCheckpointExporter(
    "acc", export_dir=export_dir, metric_fn=lambda s: float(s.global_step)
)
saver_hook = th.CheckpointSaverHook(ckpt_dir, save_steps=2, listeners=[exporter])
with th.MonitoredTrainingSession(
    checkpoint_dir=ckpt_dir, state=state, chief_only_hooks=[saver_hook],
    hooks=[th.StopAtStepHook(last_step=int(sys.argv[3]))],
    save_summaries_steps=None, log_step_count_steps=None,
) as session:
    while not session.should_stop():
        session.run(lambda: state["w"].__iadd__(1.0))
print("best", [e.step for e in exporter.best])
"""


@pytest.mark.parametrize(
    ("fault", "left_after_kill"),
    [
        # killed after step 4's tensors, before its JSON: step 4 is not an export yet
        ("listener_export_before_metadata=kill@3", ["2.json", "2.safetensors", "4.safetensors"]),
        # killed after committing step 4, before removing step 2: one export too many
        (
            "listener_export_before_remove=kill@2",
            ["2.json", "2.safetensors", "4.json", "4.safetensors"],
        ),
    ],
)
def test_a_sigkill_during_an_export_is_finished_or_undone_at_restart(
    tmp_path, fault, left_after_kill
):
    ckpt, best = tmp_path / "ckpt", tmp_path / "best"
    args = [sys.executable, "-c", CHILD, str(ckpt), str(best)]
    env = {**os.environ, "TRAINHOOKS_FAULTS": fault}
    killed = subprocess.run([*args, "10"], env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # every save is a new best (the metric is the step); the kill lands in step 4's export
    assert sorted(p.name.removeprefix("best-00000000000") for p in best.iterdir()) == sorted(
        left_after_kill
    )
    done = subprocess.run([*args, "10"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "best [10]"
    assert sorted(p.name for p in best.iterdir()) == [
        "best-000000000010.json",
        "best-000000000010.safetensors",
    ]
    with safe_open(best / "best-000000000010.safetensors", framework="numpy") as f:
        (name,) = f.keys()
        np.testing.assert_array_equal(f.get_tensor(name), np.full(4, 10.0, dtype=np.float32))


def test_exports_ranked_by_another_metric_are_never_mixed_in(tmp_path):
    first = th.BestCheckpointExporter("acc", export_dir=tmp_path / "best", metric_fn=score)
    train(tmp_path / "ckpt", [first], last_step=2)
    other = th.BestCheckpointExporter(
        "loss", mode="min", export_dir=tmp_path / "best", metric_fn=score
    )
    with pytest.raises(ValueError, match="own export_dir"):
        train(tmp_path / "ckpt", [other], last_step=4)
    assert exported_steps(tmp_path / "best") == [2]


def test_only_model_exports_load_straight_into_the_model(tmp_path):
    import safetensors.torch

    exporter = th.BestCheckpointExporter(
        "acc", keep=1, export_dir=tmp_path / "best", metric_fn=score, only="model"
    )
    train(tmp_path / "ckpt", [exporter])
    (best,) = exporter.best
    model = torch.nn.Linear(3, 2)
    model.load_state_dict(safetensors.torch.load_file(best.path))
    assert best.step == 6 and bool((model.weight == 6.0).all())
    assert json.loads(best.metadata_path.read_text())["only"] == "model"


def test_an_export_dir_of_whole_state_exports_is_refused_for_only_model(tmp_path):
    train(
        tmp_path / "ckpt",
        [th.BestCheckpointExporter("acc", export_dir=tmp_path / "best", metric_fn=score)],
    )
    exporter = th.BestCheckpointExporter(
        "acc", export_dir=tmp_path / "best", metric_fn=score, only="model"
    )
    with pytest.raises(ValueError, match="exports of the whole state, not of entry 'model'"):
        exporter.begin()
