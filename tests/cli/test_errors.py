"""Every failure is one line on stderr with a documented exit code, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import trainhooks


@pytest.mark.parametrize("command", ["ls", "verify", "export"])
def test_a_missing_path_is_one_line_and_exit_2(cli, tmp_path, command):
    args = {"prune": ["--keep", "1"], "export": [tmp_path / "o.safetensors"]}.get(command, [])
    result = cli(command, tmp_path / "nope", *args)
    assert result.code == 2
    assert result.err == f"trainhooks: error: no such file or directory: {tmp_path / 'nope'}\n"
    assert result.out == ""


def test_a_non_checkpoint_directory_is_a_usage_error_with_a_hint(cli, pristine_run, tmp_path):
    listing = cli("ls", tmp_path)
    assert listing.code == 2 and listing.err.count("\n") == 1
    assert "no checkpoints in" in listing.err
    parent = cli("show", pristine_run.parent)
    assert parent.code == 2 and parent.err.count("\n") == 1
    assert "sub-directories with checkpoints" in parent.err and str(pristine_run) in parent.err


def test_a_plain_file_is_not_a_checkpoint(cli, tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\0" * 16)
    result = cli("show", path)
    assert result.code == 2 and "is a file, not a checkpoint" in result.err
    assert result.err.count("\n") == 1


def test_a_run_whose_every_checkpoint_is_damaged_is_exit_1_not_empty(cli, run, damage):
    for step in (0, 10, 20):
        damage.truncate(run, step)
    result = cli("ls", run)
    assert result.code == 1
    assert "damaged" in result.err and "trainhooks verify" in result.err


def test_show_of_a_run_with_a_damaged_newest_uses_the_newest_valid_and_says_so(cli, run, damage):
    damage.truncate(run, 20)
    result = cli("show", run, "--json")
    assert result.code == 0, result.err
    assert result.json()["checkpoint"]["step"] == 10
    assert "newer but damaged: ckpt-000000000020" in result.err


def test_usage_errors_exit_2(cli):
    assert cli("frobnicate").code == 2
    assert cli("ls").code == 2


def test_help_lists_every_command_and_the_exit_codes(cli):
    top = cli("--help")
    assert top.code == 0 and "Exit codes" in top.out
    for command in ("ls", "show", "verify", "diff", "prune", "export"):
        assert f"  {command} " in top.out
    assert "--json" in cli("diff", "--help").out


def test_python_dash_m_runs_the_same_cli(pristine_run):
    proc = subprocess.run(
        [sys.executable, "-m", "trainhooks._cli", "ls", str(pristine_run), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert [row["step"] for row in json.loads(proc.stdout)] == [0, 10, 20]


def test_a_reader_closing_the_pipe_early_is_not_an_error(tmp_path):
    """``trainhooks show RUN --json | head -1`` must not exit 1 (our "corrupt" code)."""
    with trainhooks.Saver() as saver:
        saver.save({f"layer{i}": np.zeros(1) for i in range(1500)}, tmp_path / "run", 1)
    script = [sys.executable, "-m", "trainhooks._cli", "show", str(tmp_path / "run"), "--json"]
    proc = subprocess.Popen(script, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"{\n"
    proc.stdout.close()  # the output (> 64 KiB) cannot fit the pipe: the CLI must hit EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in err and "error" not in err
