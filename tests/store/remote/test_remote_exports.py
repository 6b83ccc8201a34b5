"""``BestCheckpointExporter`` with its export directory (and the checkpoints) in a bucket:
the JSON commit mark created last and exclusively, removed first; retention of exports;
leftovers of a killed export cleaned at the next start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors

import trainhooks as th
from trainhooks import CheckpointWriteError
from trainhooks._store._export import export_names
from trainhooks._store._remote._exports import RemoteExportDirectory

SCORES = {0: 0.1, 2: 0.5, 4: 0.3, 6: 0.9, 8: 0.7, 10: 0.2}


def _train(ckpt_dir: str, listeners: list[object], last_step: int = 10) -> None:
    """A real session; step s leaves every weight equal to s."""
    state = {"w": np.zeros(4, np.float32)}
    saver_hook = th.CheckpointSaverHook(ckpt_dir, save_steps=2, listeners=listeners)
    with th.MonitoredTrainingSession(
        checkpoint_dir=ckpt_dir,
        state=state,
        chief_only_hooks=[saver_hook],
        hooks=[th.StopAtStepHook(last_step=last_step)],
        save_summaries_steps=None,
        log_step_count_steps=None,
    ) as session:
        while not session.should_stop():
            session.run(lambda: state["w"].__iadd__(1.0))


def _score(session: th.MonitoredSession) -> dict[str, float]:
    return {"acc": SCORES[session.global_step]}


def _names(s3, prefix: str) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(p.rsplit("/", 1)[1] for p in s3.find(prefix))


def test_best_exports_go_to_the_bucket_and_only_the_best_k_stay(s3_url: str, s3) -> None:  # type: ignore[no-untyped-def]
    best = s3_url.rsplit("/", 1)[0] + "/best"
    exporter = th.BestCheckpointExporter("acc", keep=2, export_dir=best, metric_fn=_score)
    _train(s3_url, [exporter])
    assert [(e.step, e.value) for e in exporter.best] == [(6, 0.9), (8, 0.7)]
    assert _names(s3, best) == [
        "best-000000000006.json",
        "best-000000000006.safetensors",
        "best-000000000008.json",
        "best-000000000008.safetensors",
    ]
    top = exporter.best[0]
    assert str(top.path) == f"{best}/best-000000000006.safetensors"
    meta = json.loads(s3.cat_file(str(top.metadata_path)))
    assert meta["checkpoint"] == f"{s3_url}/ckpt-000000000006" and meta["value"] == 0.9
    (tensor,) = load_safetensors(s3.cat_file(str(top.path))).values()
    np.testing.assert_array_equal(tensor, np.full(4, 6.0, np.float32))

    # a restarted run reloads them and keeps competing against them
    again = th.BestCheckpointExporter("acc", keep=2, export_dir=best, metric_fn=_score)
    again.begin()
    assert [e.step for e in again.best] == [6, 8]


def test_exports_cross_between_disk_and_bucket(s3_url: str, s3, tmp_path) -> None:  # type: ignore[no-untyped-def]
    expected = ["best-000000000006.json", "best-000000000006.safetensors"]
    to_bucket = th.BestCheckpointExporter(
        "acc", keep=1, export_dir=f"{s3_url}-best", metric_fn=_score
    )
    _train(str(tmp_path / "ckpt"), [to_bucket])
    assert _names(s3, f"{s3_url}-best") == expected
    to_disk = th.BestCheckpointExporter(
        "acc", keep=1, export_dir=tmp_path / "best", metric_fn=_score
    )
    _train(s3_url, [to_disk])
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == expected
    meta = json.loads((tmp_path / "best" / expected[0]).read_text())
    assert meta["checkpoint"] == f"{s3_url}/ckpt-000000000006"


def test_open_deletes_uncommitted_tensors_and_leaves_foreign_objects(s3_url: str, s3) -> None:  # type: ignore[no-untyped-def]
    store = RemoteExportDirectory(s3_url)
    _, tensor_name = export_names(8)
    s3.pipe_file(f"{s3_url}/{tensor_name}", b"half an export")  # killed before its JSON
    s3.pipe_file(f"{s3_url}/best-000000000009.json", b'{"format": "someone else"}')
    s3.pipe_file(f"{s3_url}/notes.txt", b"mine")
    assert store.open() == []
    assert _names(s3, s3_url) == ["best-000000000009.json", "notes.txt"]


def test_the_commit_mark_is_created_exclusively(s3_url: str, s3, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with th.Saver() as saver:
        info = saver.save({"w": np.ones(3, np.float32)}, tmp_path, 2)
    store = RemoteExportDirectory(s3_url)
    json_name, _ = export_names(2)
    s3.pipe_file(f"{s3_url}/{json_name}", b"{}")  # another writer's commit got there first
    with pytest.raises(CheckpointWriteError, match="already exists"):
        store.add(2, info.path, {"metric": "acc"})
    assert s3.cat_file(f"{s3_url}/{json_name}") == b"{}"


_CHILD = textwrap.dedent(
    """
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
)


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
def test_a_sigkill_during_an_export_to_the_bucket_is_finished_or_undone_at_restart(
    s3_url: str,
    s3,
    fault: str,
    left_after_kill: list[str],  # type: ignore[no-untyped-def]
) -> None:
    best = s3_url.rsplit("/", 1)[0] + "/best"
    args = [sys.executable, "-c", _CHILD, s3_url, best]
    env = {**os.environ, "TRAINHOOKS_FAULTS": fault}
    killed = subprocess.run([*args, "6"], env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [n.removeprefix("best-00000000000") for n in _names(s3, best)] == left_after_kill
    done = subprocess.run([*args, "6"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "best [6]"
    assert _names(s3, best) == ["best-000000000006.json", "best-000000000006.safetensors"]
