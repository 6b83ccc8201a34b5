"""``trainhooks verify``: full checksum verification, exit codes and what a failure names."""

from __future__ import annotations


def test_verify_of_an_intact_run_exits_zero_and_ignores_staging_and_foreign_entries(cli, run):
    (run / "ckpt-000000000030.tmp-0123456789abcdef0123456789abcdef").mkdir()  # in progress
    (run / "events").mkdir()
    result = cli("verify", run)
    assert result.code == 0, result.err
    assert result.out.count("OK") == 3
    assert "3 checkpoints verified, all intact" in result.out
    assert result.err == ""


def test_verify_json_of_one_checkpoint(cli, pristine_run):
    result = cli("verify", pristine_run / "ckpt-000000000010", "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["ok"] is True and doc["checked"] == 1 and doc["corrupt"] == 0
    assert doc["checkpoints"][0]["step"] == 10 and doc["checkpoints"][0]["ok"] is True


def test_a_flipped_byte_exits_1_naming_file_tensor_and_step(cli, run, damage):
    damage.flip_tensor(run, 10, "ema")
    result = cli("verify", damage.ckpt(run, 10))
    assert result.code == 1
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trainhooks: error: ")
    assert "tensors.safetensors" in lines[0]
    assert "'ema'" in lines[0]
    assert "step 10" in lines[0]
    assert "Traceback" not in result.err


def test_verify_of_a_directory_finds_every_damaged_checkpoint_and_keeps_going(cli, run, damage):
    damage.flip_tensor(run, 0, "model/0.bias")
    damage.truncate(run, 20)
    result = cli("verify", run, "--json")
    assert result.code == 1
    doc = result.json()
    assert (doc["ok"], doc["checked"], doc["corrupt"]) == (False, 3, 2)
    by_step = {entry["step"]: entry for entry in doc["checkpoints"]}
    assert by_step[10]["ok"] is True
    assert by_step[0]["error"]["tensor"] == "model/0.bias"
    assert by_step[0]["error"]["file"] == "tensors.safetensors"
    assert by_step[20]["ok"] is False  # truncated: left out of `ls`, still found by verify
    assert "tensors.safetensors" in by_step[20]["error"]["message"]
    stderr = result.err.splitlines()
    assert len(stderr) == 2
    assert any("step 0" in line and "'model/0.bias'" in line for line in stderr)
    assert any("step 20" in line and "tensors.safetensors" in line for line in stderr)


def test_a_truncated_checkpoint_exits_1_naming_file_and_step(cli, run, damage):
    damage.truncate(run, 20)
    result = cli("verify", damage.ckpt(run, 20))
    assert result.code == 1
    line = result.err.strip()
    assert "\n" not in line and "tensors.safetensors" in line and "step 20" in line


def test_a_truncated_file_names_the_tensor_it_cuts(cli, run, damage):
    """The cut falls inside the last tensor's bytes; the error should say which tensor."""
    damage.truncate(run, 20)
    result = cli("verify", damage.ckpt(run, 20), "--json")
    error = result.json()["checkpoints"][0]["error"]
    assert error["tensor"] and error["file"] == "tensors.safetensors"


def test_a_checkpoint_missing_its_manifest_is_corrupt_not_absent(cli, run, damage):
    (damage.ckpt(run, 10) / "manifest.json").unlink()
    result = cli("verify", damage.ckpt(run, 10))
    assert result.code == 1
    assert "manifest.json" in result.err


def test_verify_of_a_plain_directory_is_a_usage_error(cli, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    result = cli("verify", tmp_path / "notes")
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert "neither a checkpoint nor a directory of checkpoints" in result.err
