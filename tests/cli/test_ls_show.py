"""``trainhooks ls`` and ``trainhooks show`` against real checkpoints, via the console script."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import trainhooks


def test_ls_json_lists_every_committed_checkpoint_with_the_promised_fields(cli, pristine_run):
    result = cli("ls", pristine_run, "--json")
    assert result.code == 0, result.err
    rows = result.json()
    expected = trainhooks.list_checkpoints(pristine_run)
    assert [row["step"] for row in rows] == [0, 10, 20]
    for row, info in zip(rows, expected, strict=True):
        assert Path(row["path"]) == info.path.absolute()
        assert row["time"] == info.time
        assert row["nbytes"] == info.nbytes
        assert row["num_tensors"] == info.num_tensors == 11
    assert [row["newest"] for row in rows] == [False, False, True]


def test_ls_table_marks_the_newest_hides_staging_and_foreign_entries_and_notes_damage(
    cli, run, damage
):
    (run / "ckpt-000000000030.tmp-0123456789abcdef0123456789abcdef").mkdir()
    (run / "tensorboard").mkdir()
    damage.truncate(run, 20)
    result = cli("ls", run)
    assert result.code == 0, result.err
    lines = [line for line in result.out.splitlines() if "ckpt-" in line]
    assert len(lines) == 2
    assert "newest" in lines[-1] and "ckpt-000000000010" in lines[-1]
    assert ".tmp-" not in result.out and "tensorboard" not in result.out
    assert "ckpt-000000000020" not in result.out
    assert "not listed, damaged or incomplete: ckpt-000000000020" in result.err


def test_ls_of_a_checkpoint_lists_its_directory_and_says_so(cli, pristine_run):
    result = cli("ls", pristine_run / "ckpt-000000000010", "--json")
    assert result.code == 0, result.err
    assert [row["step"] for row in result.json()] == [0, 10, 20]
    assert "using its directory" in result.err


def test_show_of_a_run_directory_shows_the_newest_checkpoint_and_says_so(cli, pristine_run):
    result = cli("show", pristine_run)
    assert result.code == 0, result.err
    assert "using the newest, step 20" in result.err
    out = result.out
    assert "step 20" in out
    for text in ("0.weight", "float32", "(3, 4)", "momentum_buffer", "ema", "epoch = 2", "run-a"):
        assert text in out


def test_show_json_lists_tensors_with_dtype_shape_bytes_and_plain_values(cli, pristine_run):
    result = cli("show", pristine_run / "ckpt-000000000010", "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["checkpoint"]["step"] == 10
    entries = {entry["name"]: entry for entry in doc["entries"]}
    weight = entries["model/0.weight"]
    assert (weight["kind"], weight["dtype"], weight["shape"], weight["nbytes"]) == (
        "tensor",
        "float32",
        [3, 4],
        48,
    )
    assert entries["mask"]["dtype"] == "bool"
    assert entries["epoch"] == {"name": "epoch", "kind": "value", "value": 1}
    assert entries["config/name"]["value"] == "run-a"
    assert entries["scale"]["kind"] == "tensor" and entries["scale"]["shape"] == []
    tensors = sum(e["kind"] == "tensor" for e in doc["entries"])
    assert tensors == doc["checkpoint"]["num_tensors"] == 11


def test_show_flat_prints_one_row_per_entry(cli, pristine_run):
    result = cli("show", pristine_run, "--flat")
    assert result.code == 0, result.err
    assert "optimizer/state/0/momentum_buffer" in result.out


def test_show_tensor_statistics_match_numpy(cli, tmp_path):
    values = np.array([[1.5, -2.0, np.nan], [0.0, np.inf, 4.0]], dtype=np.float32)
    with trainhooks.Saver() as saver:
        saver.save({"w": values, "n": np.arange(5, dtype=np.int64)}, tmp_path / "run", 7)
    result = cli("show", tmp_path / "run", "--tensor", "w", "--json")
    assert result.code == 0, result.err
    stats = result.json()
    finite = values[np.isfinite(values)].astype(np.float64)
    assert stats["name"] == "w" and stats["shape"] == [2, 3] and stats["dtype"] == "float32"
    assert (stats["num_nan"], stats["num_inf"], stats["num_zero"]) == (1, 1, 1)
    assert stats["min"] == finite.min() and stats["max"] == finite.max()
    assert np.isclose(stats["mean"], finite.mean()) and np.isclose(stats["std"], finite.std())
    ints = cli("show", tmp_path / "run", "--tensor", "n", "--json").json()
    assert (ints["min"], ints["max"], ints["mean"]) == (0, 4, 2.0)


def test_show_tensor_accepts_a_unique_suffix_and_suggests_names_when_unknown(cli, pristine_run):
    found = cli("show", pristine_run, "--tensor", "0.weight")
    assert found.code == 0, found.err
    assert "model/0.weight" in found.out and "mean" in found.out
    missing = cli("show", pristine_run, "--tensor", "0.weigth")
    assert missing.code == 2
    assert missing.err.count("\n") == 2  # the "using the newest" note + one error line
    assert "did you mean" in missing.err and "model/0.weight" in missing.err


def test_show_tensor_verifies_and_names_the_corrupt_tensor(cli, run, damage):
    damage.flip_tensor(run, 20, "model/2.weight")
    result = cli("show", damage.ckpt(run, 20), "--tensor", "2.weight")
    assert result.code == 1
    assert "'model/2.weight'" in result.err and "step 20" in result.err
    assert "Traceback" not in result.err
    # show reads the one tensor asked for: another one's statistics are still shown
    assert cli("show", damage.ckpt(run, 20), "--tensor", "ema").code == 0


def test_show_of_a_file_inside_a_checkpoint_shows_that_checkpoint(cli, pristine_run):
    result = cli("show", pristine_run / "ckpt-000000000000" / "manifest.json", "--json")
    assert result.code == 0, result.err
    assert result.json()["checkpoint"]["step"] == 0


def test_custom_basename_is_detected(cli, tmp_path):
    with trainhooks.Saver(basename="model") as saver:
        saver.save({"x": np.ones(3)}, tmp_path / "run", 5)
    listed = cli("ls", tmp_path / "run", "--json")
    assert listed.code == 0, listed.err
    assert [row["step"] for row in listed.json()] == [5]
    with trainhooks.Saver(basename="other") as saver:
        saver.save({"x": np.zeros(3)}, tmp_path / "run", 1)
    ambiguous = cli("ls", tmp_path / "run")
    assert ambiguous.code == 2 and "--basename" in ambiguous.err
    chosen = cli("--basename", "other", "ls", tmp_path / "run", "--json")
    assert chosen.code == 0, chosen.err
    assert [Path(row["path"]).name for row in chosen.json()] == ["other-000000000001"]
