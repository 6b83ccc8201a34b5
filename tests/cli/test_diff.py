"""``trainhooks diff A B``: added, removed and changed tensors and values, with magnitudes."""

from __future__ import annotations

import numpy as np
import pytest

import trainhooks


@pytest.fixture
def two_checkpoints(tmp_path):
    import torch

    old = {
        "w": torch.tensor([1.0, 2.0, 3.0]),
        "same": np.arange(4, dtype=np.int32),
        "gone": np.zeros(2, dtype=np.float32),
        "reshaped": np.zeros((2, 2), dtype=np.float32),
        "lr": 0.1,
    }
    new = {
        "w": torch.tensor([1.0, 2.0, 3.5]),
        "same": np.arange(4, dtype=np.int32),
        "added": np.ones((2, 3), dtype=np.float16),
        "reshaped": np.zeros(4, dtype=np.float32),
        "lr": 0.2,
    }
    with trainhooks.Saver() as saver:
        a = saver.save(old, tmp_path / "run", 1).path
        b = saver.save(new, tmp_path / "run", 2).path
    return a, b


def test_diff_json_reports_added_removed_and_changed_with_max_abs_and_rel(cli, two_checkpoints):
    a, b = two_checkpoints
    result = cli("diff", a, b, "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["identical"] is False
    assert (doc["a"]["step"], doc["b"]["step"]) == (1, 2)
    assert [e["name"] for e in doc["added"]] == ["added"]
    assert doc["added"][0]["dtype"] == "float16" and doc["added"][0]["shape"] == [2, 3]
    assert [e["name"] for e in doc["removed"]] == ["gone"]
    changed = {c["name"]: c for c in doc["changed"]}
    assert set(changed) == {"w", "reshaped", "lr"}
    w = changed["w"]
    assert w["num_changed"] == 1
    assert w["max_abs"] == pytest.approx(0.5)
    assert w["max_rel"] == pytest.approx(0.5 / 3.5)
    assert changed["reshaped"]["old_shape"] == [2, 2] and changed["reshaped"]["new_shape"] == [4]
    assert changed["reshaped"]["max_abs"] is None
    assert (changed["lr"]["kind"], changed["lr"]["old"], changed["lr"]["new"]) == (
        "value",
        0.1,
        0.2,
    )
    assert doc["num_unchanged"] == 1


def test_diff_table_names_each_change(cli, two_checkpoints):
    a, b = two_checkpoints
    result = cli("diff", a, b)
    assert result.code == 0, result.err
    out = result.out
    for text in ("tensors changed (2)", "values changed (1)", "added (1)", "removed (1)"):
        assert text in out
    assert "0.5" in out and "(2, 2) → (4,)" in out
    assert "3 changed, 1 added, 1 removed, 1 unchanged" in out


def test_diff_of_a_checkpoint_with_itself_is_identical(cli, pristine_run):
    result = cli("diff", pristine_run / "ckpt-000000000020", pristine_run, "--json")
    assert result.code == 0, result.err
    assert result.json()["identical"] is True
    assert "using the newest, step 20" in result.err


def test_diff_between_training_steps_sees_the_model_move(cli, pristine_run):
    result = cli(
        "diff", pristine_run / "ckpt-000000000000", pristine_run / "ckpt-000000000020", "--json"
    )
    assert result.code == 0, result.err
    changed = {c["name"]: c for c in result.json()["changed"]}
    assert changed["model/0.weight"]["max_abs"] > 0
    assert changed["epoch"]["old"] == 0 and changed["epoch"]["new"] == 2
    assert "ema" not in changed


def test_diff_refuses_a_corrupt_side(cli, run, damage):
    damage.flip_tensor(run, 10, "model/0.weight")
    result = cli("diff", damage.ckpt(run, 0), damage.ckpt(run, 10))
    assert result.code == 1
    assert "'model/0.weight'" in result.err and "step 10" in result.err
