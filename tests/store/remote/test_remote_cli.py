"""The ``trainhooks`` command on ``s3://`` URLs: the same output and exit codes as on a local
directory, and one clear line when the bucket, the prefix or the credentials are missing.

The commands run in-process (``trainhooks._cli.main``) against the moto server; one smoke
test runs the installed console script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors

import trainhooks
from trainhooks._cli import main as cli_main

STEPS = (0, 10, 20)


def _state(step: int) -> dict[str, Any]:
    return {
        "model": {"w": np.full((4, 3), step, np.float32), "b": np.arange(3.0) + step},
        "epoch": step // 10,
        "name": "run-a",
    }


def _save_run(directory: str | Path) -> None:
    with trainhooks.Saver(max_to_keep=None) as saver:
        for step in STEPS:
            saver.save(_state(step), directory, step)


class Cli:
    """``trainhooks ARGS`` in this process: exit code, stdout and stderr."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: object) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = cli_main([str(a) for a in args])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("TRAINHOOKS_DEBUG", raising=False)
    return Cli(capsys)


@pytest.fixture
def run(s3_url: str) -> str:
    _save_run(s3_url)
    return s3_url


def _without_volatile(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k not in {"path", "time", "time_iso"}} for e in entries]


def test_ls_on_a_url_prints_what_it_prints_for_a_local_directory(
    cli: Cli, run: str, tmp_path: Path
) -> None:
    local = tmp_path / "run"
    _save_run(local)
    code, out, err = cli("ls", "--json", run)
    assert (code, err) == (0, "")
    remote = json.loads(out)
    assert [e["path"] for e in remote] == [f"{run}/ckpt-{s:012d}" for s in STEPS]
    assert cli("ls", "--json", local)[0] == 0
    local_json = json.loads(cli("ls", "--json", local)[1])
    # sizes too: the objects hold the local format byte for byte (only a data name differs)
    assert _without_volatile(remote)[0].keys() == _without_volatile(local_json)[0].keys()
    assert [e["step"] for e in remote] == [e["step"] for e in local_json]
    assert [e["newest"] for e in remote] == [False, False, True]
    code, out, _ = cli("ls", run)
    assert code == 0 and f"3 checkpoints in {run}" in out and "ckpt-000000000020" in out


def test_ls_of_a_checkpoint_url_lists_its_directory(cli: Cli, run: str) -> None:
    code, out, err = cli("ls", f"{run}/ckpt-000000000010")
    assert code == 0 and "3 checkpoints" in out
    assert f"is a checkpoint; using its directory {run}" in err


def test_show_resolves_the_newest_checkpoint_and_reads_one_tensor(cli: Cli, run: str) -> None:
    code, out, err = cli("show", "--flat", run)
    assert code == 0, err
    assert "using the newest, step 20" in err
    assert "model/w" in out and "float32" in out and "'run-a'" in out
    code, out, err = cli("show", "--json", "--tensor", "w", f"{run}/ckpt-000000000010")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["name"] == "model/w" and doc["min"] == doc["max"] == 10.0
    assert doc["checkpoint"]["path"] == f"{run}/ckpt-000000000010"
    # a file inside a checkpoint means that checkpoint, as locally
    code, out, err = cli("show", "--json", f"{run}/ckpt-000000000010/manifest.json")
    assert code == 0 and "a file inside a checkpoint" in err
    assert json.loads(out)["checkpoint"]["step"] == 10


def test_show_of_the_tree_downloads_no_tensor_bytes(
    cli: Cli, run: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainhooks._store._remote._objects import FsspecObjects

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("show downloaded tensor bytes")

    monkeypatch.setattr(FsspecObjects, "read_into", refuse)
    code, out, err = cli("show", "--json", run)
    assert code == 0, err
    entries = {e["name"]: e for e in json.loads(out)["entries"]}
    assert entries["model/w"] == {
        "name": "model/w",
        "kind": "tensor",
        "dtype": "float32",
        "shape": [4, 3],
        "nbytes": 48,
    }
    assert entries["name"] == {"name": "name", "kind": "value", "value": "run-a"}


def test_verify_finds_a_flipped_byte_in_an_object_exit_1(cli: Cli, run: str, s3) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = cli("verify", run)
    assert code == 0 and "3 checkpoints verified, all intact" in out
    (data,) = [p for p in s3.find(f"{run}/ckpt-000000000010") if p.endswith(".safetensors")]
    blob = bytearray(s3.cat_file(data))
    blob[-3] ^= 0xFF  # inside the last tensor's bytes
    s3.pipe_file(data, bytes(blob))
    code, out, err = cli("verify", "--json", run)
    assert code == 1
    doc = json.loads(out)
    assert (doc["checked"], doc["corrupt"]) == (3, 1)
    (bad,) = [c for c in doc["checkpoints"] if not c["ok"]]
    assert bad["step"] == 10 and bad["error"]["type"] == "CheckpointCorruptError"
    assert err.count("\n") == 1 and "crc32c" in err and "step 10" in err
    assert "Traceback" not in err


def test_an_upload_that_never_committed_is_not_reported_as_damage(cli: Cli, run: str, s3) -> None:  # type: ignore[no-untyped-def]
    # a writer killed before its manifest left its data object (the next writer deletes it)
    s3.pipe_file(f"{run}/ckpt-000000000030/tensors-{'0' * 32}.safetensors", b"partial")
    code, out, err = cli("ls", run)
    assert (code, err) == (0, "") and "3 checkpoints" in out
    code, out, err = cli("verify", run)
    assert (code, err) == (0, "") and "3 checkpoints verified, all intact" in out
    # a committed checkpoint whose data object is gone is damage, reported as locally
    (data,) = [p for p in s3.find(f"{run}/ckpt-000000000020") if p.endswith(".safetensors")]
    s3.rm(data)
    code, out, err = cli("ls", run)
    assert code == 0 and "not listed, damaged or incomplete: ckpt-000000000020" in err
    code, out, err = cli("verify", run)
    assert code == 1 and "ckpt-000000000020" in err and "missing" in err


def test_diff_compares_two_checkpoints_in_the_bucket_and_one_on_disk(
    cli: Cli, run: str, tmp_path: Path
) -> None:
    code, out, err = cli("diff", "--json", f"{run}/ckpt-000000000000", run)
    assert code == 0, err
    doc = json.loads(out)
    assert not doc["identical"]
    assert {c["name"] for c in doc["changed"]} == {"model/w", "model/b", "epoch"}
    local = tmp_path / "run"
    _save_run(local)
    code, out, _ = cli("diff", "--json", local, run)
    assert code == 0 and json.loads(out)["identical"]


def test_prune_keeps_the_newest_and_refuses_while_a_writer_holds_the_lease(
    cli: Cli, run: str
) -> None:
    with trainhooks.Saver(max_to_keep=None) as saver:
        saver.save(_state(30), run, 30)  # holds the prefix's lease until closed
        code, _, err = cli("prune", run, "--keep", "1")
    assert code == 3 and err.count("\n") == 1 and "lease" in err.lower()
    code, out, err = cli("prune", "--json", run, "--keep", "2", "--dry-run")
    assert code == 0, err
    assert [e["step"] for e in json.loads(out)["removed"]] == [0, 10]
    code, out, err = cli("prune", run, "--keep", "2")
    assert code == 0, err
    assert "removed 2 of 4" in out and "kept steps: 20, 30" in out
    assert [c.step for c in trainhooks.list_checkpoints(run)] == [20, 30]


def test_export_between_bucket_and_disk_in_either_direction(
    cli: Cli, run: str, tmp_path: Path, s3
) -> None:  # type: ignore[no-untyped-def]
    out_file = tmp_path / "model.safetensors"
    code, out, err = cli("export", "--json", run, out_file, "--only", "model")
    assert code == 0, err
    assert json.loads(out)["nbytes"] == out_file.stat().st_size
    tensors = load_safetensors(out_file.read_bytes())
    np.testing.assert_array_equal(tensors["w"], np.full((4, 3), 20, np.float32))

    bucket_dir = run.rsplit("/", 1)[0] + "/exports/"
    code, out, err = cli("export", "--json", f"{run}/ckpt-000000000010", bucket_dir)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["output"] == f"{bucket_dir}ckpt-000000000010.safetensors"
    remote = load_safetensors(s3.cat_file(doc["output"]))
    assert doc["nbytes"] == len(s3.cat_file(doc["output"]))
    np.testing.assert_array_equal(remote["model/b"], np.arange(3.0) + 10)
    # an existing object is not replaced without --force, as a local file
    code, _, err = cli("export", f"{run}/ckpt-000000000010", doc["output"])
    assert code == 2 and "--force" in err

    local = tmp_path / "run"
    _save_run(local)
    code, out, err = cli("export", "--json", local, f"{bucket_dir}from-disk.safetensors")
    assert code == 0, err
    np.testing.assert_array_equal(
        load_safetensors(s3.cat_file(f"{bucket_dir}from-disk.safetensors"))["model/w"],
        tensors["w"],
    )


def test_file_urls_are_local_paths(cli: Cli, tmp_path: Path) -> None:
    _save_run(tmp_path / "run")
    code, out, _ = cli("ls", "--json", f"file://{tmp_path}/run")
    assert code == 0 and [e["step"] for e in json.loads(out)] == list(STEPS)


@pytest.mark.parametrize("command", ["ls", "show", "verify", "prune", "export"])
def test_a_missing_bucket_or_prefix_is_one_line_and_exit_2(
    cli: Cli, s3_url: str, tmp_path: Path, command: str
) -> None:
    extra = {"prune": ["--keep", "1"], "export": [tmp_path / "o.safetensors"]}.get(command, [])
    for url in ("s3://th-no-such-bucket/run", f"{s3_url}/nothing-here"):
        code, out, err = cli(command, url, *extra)
        assert (code, out) == (2, "")
        expected = f"nothing at {url}: no such bucket, or no object under it"
        assert err == f"trainhooks: error: {expected}\n"


def test_missing_credentials_are_one_line_and_exit_3_never_printing_a_secret(
    cli: Cli, run: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import s3fs

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role probing
    s3fs.S3FileSystem.clear_instance_cache()  # a cached client keeps its credentials
    try:
        code, out, err = cli("ls", run)
        assert (code, out) == (3, "")
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"cannot reach {run}: NoCredentialsError" in err and "AWS_ACCESS_KEY_ID" in err
        # a wrong secret: the service refuses, and the secret's value is never echoed
        secret = "wrong-secret-0123456789abcdefghijklmnopqrs"
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        s3fs.S3FileSystem.clear_instance_cache()
        code, out, err = cli("verify", run)
        assert secret not in out + err
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


def test_a_url_of_a_service_without_its_package_is_one_line_and_exit_3(cli: Cli) -> None:
    code, out, err = cli("ls", "gs://some-bucket/run")  # gcsfs is not installed here
    assert (code, out) == (3, "") and err.count("\n") == 1
    assert err.startswith("trainhooks: error: ") and "gs://some-bucket/run" in err
    assert "internal error" not in err


def test_the_console_script_lists_a_bucket(run: str) -> None:
    script = Path(sys.executable).parent / "trainhooks"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "trainhooks._cli"]
    done = subprocess.run(
        [*command, "ls", "--json", run],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert [e["step"] for e in json.loads(done.stdout)] == list(STEPS)
