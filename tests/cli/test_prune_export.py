"""``trainhooks prune`` and ``trainhooks export``: the commands that write."""

from __future__ import annotations

import json

import numpy as np
from safetensors import safe_open

import trainhooks


def test_prune_dry_run_changes_nothing(cli, run):
    result = cli("prune", run, "--keep", "1", "--dry-run", "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["dry_run"] is True
    assert [e["step"] for e in doc["removed"]] == [0, 10]
    assert [info.step for info in trainhooks.list_checkpoints(run)] == [0, 10, 20]


def test_prune_keeps_the_newest_n(cli, run):
    result = cli("prune", run, "--keep", "2")
    assert result.code == 0, result.err
    assert "removed 1 of 3" in result.out and "kept steps: 10, 20" in result.out
    assert [info.step for info in trainhooks.list_checkpoints(run)] == [10, 20]
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == [
        "ckpt-000000000010",
        "ckpt-000000000020",
    ]


def test_prune_while_a_writer_holds_the_directory_fails_with_exit_3(cli, run):
    with trainhooks.Saver(max_to_keep=None) as saver:
        saver.save({"x": np.ones(2)}, run, 30)  # takes and keeps the directory lock
        result = cli("prune", run, "--keep", "1")
    assert result.code == 3
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert [info.step for info in trainhooks.list_checkpoints(run)] == [0, 10, 20, 30]


def test_prune_rejects_keep_zero_and_a_single_checkpoint_path(cli, run):
    assert cli("prune", run, "--keep", "0").code == 2
    single = cli("prune", run / "ckpt-000000000020", "--keep", "1")
    assert single.code == 2 and "did you mean" in single.err


def test_export_writes_one_safetensors_file_other_tools_read(cli, pristine_run, tmp_path):
    out = tmp_path / "model.safetensors"
    result = cli("export", pristine_run, out, "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["checkpoint"]["step"] == 20 and doc["output"] == str(out)
    assert doc["nbytes"] == out.stat().st_size
    expected = trainhooks.load(pristine_run / "ckpt-000000000020")
    with safe_open(str(out), "np") as f:
        assert set(f.keys()) >= {"model/0.weight", "ema", "mask"}
        np.testing.assert_array_equal(f.get_tensor("ema"), expected["ema"])
        np.testing.assert_array_equal(f.get_tensor("model/0.weight"), expected["model"]["0.weight"])
        metadata = f.metadata()
    assert metadata["trainhooks_step"] == "20"
    json.loads(metadata["trainhooks_tree"])


def test_export_refuses_to_overwrite_without_force_and_names_output_in_a_directory(
    cli, pristine_run, tmp_path
):
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"keep me")
    refused = cli("export", pristine_run, out)
    assert refused.code == 2 and "--force" in refused.err
    assert out.read_bytes() == b"keep me"
    assert cli("export", pristine_run, out, "--force").code == 0
    into_dir = cli("export", pristine_run / "ckpt-000000000010", tmp_path)
    assert into_dir.code == 0, into_dir.err
    assert (tmp_path / "ckpt-000000000010.safetensors").is_file()


def test_export_of_a_corrupt_checkpoint_fails_and_writes_nothing(cli, run, damage, tmp_path):
    damage.flip_tensor(run, 20, "mask")
    out = tmp_path / "out.safetensors"
    result = cli("export", damage.ckpt(run, 20), out)
    assert result.code == 1
    assert "'mask'" in result.err and "step 20" in result.err
    assert not out.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "run"]
    assert leftovers == [], "a failed export must not leave its temp file behind"


def test_export_only_model_writes_the_names_its_state_dict_uses(cli, pristine_run, tmp_path):
    import safetensors.torch
    import torch

    out = tmp_path / "model.safetensors"
    result = cli("export", pristine_run, out, "--only", "model", "--json")
    assert result.code == 0, result.err
    assert result.json()["only"] == "model"
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    model.load_state_dict(safetensors.torch.load_file(out))  # no optimizer, ema, mask...
    expected = trainhooks.load(pristine_run / "ckpt-000000000020")["model"]
    np.testing.assert_array_equal(model[0].weight.detach().numpy(), expected["0.weight"])


def test_export_only_an_unknown_entry_is_a_usage_error_listing_the_entries(
    cli, pristine_run, tmp_path
):
    out = tmp_path / "model.safetensors"
    result = cli("export", pristine_run, out, "--only", "modle")
    assert result.code == 2
    assert "no entry 'modle'" in result.err and "'model'" in result.err
    assert not out.exists()
