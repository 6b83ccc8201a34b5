"""Hostile manifests and headers: every reader gives a typed error naming the file, and
whatever restores falls back to the previous checkpoint.

Step 1 of a directory stays good; step 2 is forged. Some forgeries leave the manifest's
checksum stale (the check that runs first must not choke on them); most re-seal it, as an
attacker who knows the format would, so that the typed checks behind the checksum are
what is tested. Every reader — ``verify_checkpoint``, ``load``, ``checkpoint_info``,
``list_checkpoints``, ``latest_checkpoint``, ``Saver.restore`` with and without a step, a
later ``Saver.save`` into the same directory, and every CLI command — must either succeed
or raise ``CheckpointCorruptError``; ``restore()`` must come back with step 1 and a warning
that says so and how to inspect step 2.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c
import numpy as np
import pytest
import torch

import trainhooks
from _support.reliability import report_figure
from trainhooks import CheckpointCorruptError, RNGState, Saver
from trainhooks._cli._app import main as cli_main
from trainhooks._store._limits import MAX_MANIFEST_BYTES

DATA, MANIFEST = "tensors.safetensors", "manifest.json"
COUNTS = {"inputs": 0, "reader_calls": 0, "typed_errors": 0, "cli_calls": 0}


@pytest.fixture(autouse=True, scope="module")
def _figures() -> Any:
    yield
    report_figure("hostile_manifests", **COUNTS)


def state_for(step: int) -> dict[str, Any]:
    return {
        "w": np.full(4, step, np.float32),
        "rng": RNGState(),
        "device": torch.device("cpu"),
        "blob": b"\x00\x01" * step,
        "meta": {"step": step, "lr": 0.5},
    }


# -- forging tools -----------------------------------------------------------------------


def canonical(body: Any) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def seal(body: dict[str, Any], raw: dict[str, str] | None = None) -> bytes:
    """Manifest bytes with a valid checksum; ``raw`` maps placeholder strings to raw JSON
    text put in their place (``1e400``, ``NaN``: what no JSON encoder writes)."""
    body = {k: v for k, v in body.items() if k != "manifest_crc32c"}
    body["manifest_crc32c"] = "@CRC@"
    text = canonical(body).decode()
    for placeholder, token in (raw or {}).items():
        text = text.replace(json.dumps(placeholder), token)
    unsealed = text.replace(',"manifest_crc32c":"@CRC@"', "")
    return text.replace('"@CRC@"', str(crc32c.crc32c(unsealed.encode()))).encode()


def sealed(change: Callable[[dict[str, Any]], Any], **raw: str) -> Callable[[Path], None]:
    def forge(checkpoint: Path) -> None:
        body = json.loads((checkpoint / MANIFEST).read_bytes())
        change(body)
        (checkpoint / MANIFEST).write_bytes(seal(body, {f"@{k}@": v for k, v in raw.items()}))

    return forge


def stale(pattern: str, replacement: Callable[[re.Match[str]], str]) -> Callable[[Path], None]:
    """Edit the manifest's bytes with a regex and leave its checksum as it was."""

    def forge(checkpoint: Path) -> None:
        text = (checkpoint / MANIFEST).read_text()
        edited, count = re.subn(pattern, replacement, text, count=1)
        assert count == 1 and edited != text, pattern
        (checkpoint / MANIFEST).write_text(edited)

    return forge


def header_forged(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    """Rewrite the safetensors header and re-seal the manifest to match the new file."""

    def forge(checkpoint: Path) -> None:
        raw = (checkpoint / DATA).read_bytes()
        (length,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + length])
        change(header)
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        prefix = struct.pack("<Q", len(text))
        data = prefix + text + raw[8 + length :]
        (checkpoint / DATA).write_bytes(data)

        def agree(body: dict[str, Any]) -> None:
            body["files"][DATA] = {
                "size": len(data),
                "header_size": len(prefix) + len(text),
                "header_crc32c": crc32c.crc32c(prefix + text),
            }
            shift = len(text) - length
            for record in body["tensors"]:
                record["offsets"] = [o + shift for o in record["offsets"]]

        sealed(agree)(checkpoint)

    return forge


def tree_node(body: dict[str, Any], key: str) -> dict[str, Any]:
    """The tree node stored under the top-level state key ``key``."""
    return next(node for k, node in body["tree"]["items"] if k == key)


def set_python_rng_entry(body: dict[str, Any], value: Any) -> None:
    state = tree_node(body, "rng")["state"]
    python = next(node for k, node in state["items"] if k == "python")
    internal = next(node for k, node in python["items"] if k == "state")
    internal["items"][5] = {"type": "value", "value": value}


def set_retention_time(body: dict[str, Any], value: Any) -> None:
    body["retention"]["managed"][0][1] = value


def fraction_digit_to_e(match: re.Match[str]) -> str:
    """``1764072345.123456`` -> ``1e99999999999999``: a float too large for a double, in the
    same number of bytes (whatever digits the save's clock gave)."""
    value = f"{match.group(1)}.{match.group(2)}"
    return f'"time":1e{"9" * (len(value) - 2)}'


@dataclass(frozen=True)
class Forgery:
    forge: Callable[[Path], None]
    structural: bool = True  # refused by the structure check (listing, verify, load)
    tree: bool = False  # refused when the tree is decoded (load and restore)


FORGERIES: dict[str, Forgery] = {
    # stale checksum: the first check must not choke on what it parses
    "time_1e400_stale": Forgery(stale(r'"time":[0-9.e+-]+', lambda m: '"time":1e400')),
    "time_digit_to_e_stale": Forgery(stale(r'"time":(\d+)\.(\d+)', fraction_digit_to_e)),
    "size_1e400_stale": Forgery(stale(r'"size":\d+', lambda m: '"size":1e400')),
    "time_nan_stale": Forgery(stale(r'"time":[0-9.e+-]+', lambda m: '"time":NaN')),
    # re-sealed: the typed checks behind the checksum
    "time_10_pow_400": Forgery(sealed(lambda b: b.__setitem__("time", 10**400))),
    "time_1e400_sealed": Forgery(sealed(lambda b: b.__setitem__("time", "@x@"), x="1e400")),
    "time_infinity_sealed": Forgery(sealed(lambda b: b.__setitem__("time", "@x@"), x="Infinity")),
    "time_a_string": Forgery(sealed(lambda b: b.__setitem__("time", "noon"))),
    "step_10_pow_400": Forgery(sealed(lambda b: b.__setitem__("step", 10**400))),
    "step_disagrees_with_directory": Forgery(sealed(lambda b: b.__setitem__("step", 7))),
    "sequence_negative": Forgery(sealed(lambda b: b.__setitem__("sequence", -1))),
    "sequence_10_pow_400": Forgery(sealed(lambda b: b.__setitem__("sequence", 10**400))),
    "sequence_a_string": Forgery(sealed(lambda b: b.__setitem__("sequence", "9"))),
    "format_version_0": Forgery(sealed(lambda b: b.__setitem__("format_version", 0))),
    "format_version_negative": Forgery(sealed(lambda b: b.__setitem__("format_version", -1))),
    "format_version_bool": Forgery(sealed(lambda b: b.__setitem__("format_version", True))),
    "format_version_float": Forgery(sealed(lambda b: b.__setitem__("format_version", 1.0))),
    "file_size_1e400_sealed": Forgery(
        sealed(lambda b: b["files"][DATA].__setitem__("size", "@x@"), x="1e400")
    ),
    "record_offset_10_pow_400": Forgery(
        sealed(lambda b: b["tensors"][0].__setitem__("offsets", [10**400, 10**400 + 16]))
    ),
    "record_crc_float": Forgery(sealed(lambda b: b["tensors"][0].__setitem__("crc32c", 1.5))),
    "header_dtype_list": Forgery(header_forged(lambda h: h["w"].__setitem__("dtype", ["F32"]))),
    "header_dtype_dict": Forgery(header_forged(lambda h: h["w"].__setitem__("dtype", {"a": 1}))),
    "header_shape_float": Forgery(header_forged(lambda h: h["w"].__setitem__("shape", [4.0]))),
    "header_offsets_bool": Forgery(
        header_forged(lambda h: h["w"].__setitem__("data_offsets", [False, True]))
    ),
    "header_metadata_list": Forgery(header_forged(lambda h: h.__setitem__("__metadata__", []))),
    "retention_time_10_pow_400": Forgery(sealed(lambda b: set_retention_time(b, 10**400))),
    "retention_time_1e400": Forgery(sealed(lambda b: set_retention_time(b, "@x@"), x="1e400")),
    "retention_managed_a_string": Forgery(
        sealed(lambda b: b["retention"].__setitem__("managed", "x"))
    ),
    "retention_delete_negative": Forgery(
        sealed(lambda b: b["retention"].__setitem__("delete", [-1]))
    ),
    "retention_keep_time_a_list": Forgery(
        sealed(lambda b: b["retention"].__setitem__("next_keep_time", [1]))
    ),
    "metadata_300_deep": Forgery(
        sealed(lambda b: b.__setitem__("metadata", json.loads("[" * 300 + "]" * 300)))
    ),
    "metadata_a_list": Forgery(sealed(lambda b: b.__setitem__("metadata", [1]))),
    "tree_device_garbage": Forgery(
        sealed(lambda b: tree_node(b, "device").__setitem__("value", "garbage")),
        structural=False,
        tree=True,
    ),
    "tree_device_a_list": Forgery(
        sealed(lambda b: tree_node(b, "device").__setitem__("value", ["cpu"])),
        structural=False,
        tree=True,
    ),
    "tree_bytes_not_base64": Forgery(
        sealed(lambda b: tree_node(b, "blob").__setitem__("value", "AAEAAQ==!!")),
        structural=False,
        tree=True,
    ),
    "tree_bytes_a_number": Forgery(
        sealed(lambda b: tree_node(b, "blob").__setitem__("value", 5)),
        structural=False,
        tree=True,
    ),
    "tree_float_huge_int": Forgery(
        sealed(lambda b: tree_node(b, "meta")["items"][1][1].update(type="float", value=10**400)),
        structural=False,
        tree=True,
    ),
    "rng_entry_2_pow_70": Forgery(
        sealed(lambda b: set_python_rng_entry(b, 2**70)), structural=False
    ),
    "rng_entry_negative": Forgery(sealed(lambda b: set_python_rng_entry(b, -5)), structural=False),
    "rng_entry_a_string": Forgery(sealed(lambda b: set_python_rng_entry(b, "x")), structural=False),
}


# -- the readers -------------------------------------------------------------------------


def outcome(call: Callable[[], Any]) -> Any:
    """What a reader did: its result, or the typed error it raised (untyped ones propagate)."""
    COUNTS["reader_calls"] += 1
    try:
        return call()
    except CheckpointCorruptError as exc:
        COUNTS["typed_errors"] += 1
        assert exc.file in (MANIFEST, DATA), f"{exc!r} names no file (file={exc.file!r})"
        assert "ckpt-000000000002" in str(exc), str(exc)
        return exc


def run_cli(*args: str | Path, capsys: pytest.CaptureFixture[str]) -> int:
    COUNTS["cli_calls"] += 1
    code = cli_main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code != 4, f"trainhooks {' '.join(map(str, args))}: internal error: {err}"
    return code


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pristine")
    with Saver() as saver:
        for step in (1, 2):
            saver.save(state_for(step), directory, step)
    return directory


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_checkpoint_gives_typed_errors_and_restore_falls_back(
    name: str, pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    directory = tmp_path / "run"
    shutil.copytree(pristine, directory)
    victim, good = directory / "ckpt-000000000002", directory / "ckpt-000000000001"
    forgery = FORGERIES[name]
    forgery.forge(victim)
    COUNTS["inputs"] += 1

    refused = {
        "verify": outcome(lambda: trainhooks.verify_checkpoint(victim)),
        "info": outcome(lambda: trainhooks.checkpoint_info(victim)),
        "load": outcome(lambda: trainhooks.load(victim)),
        "restore_step": outcome(lambda: Saver().restore(state_for(0), directory, step=2)),
    }
    listed = [i.step for i in outcome(lambda: trainhooks.list_checkpoints(directory))]
    latest = outcome(lambda: trainhooks.latest_checkpoint(directory))
    must_refuse = {"restore_step"}
    if forgery.structural:
        must_refuse |= {"verify", "info", "load"}
        assert listed == [1] and latest.step == 1
    if forgery.tree:
        must_refuse |= {"load"}
    for reader in must_refuse:
        assert isinstance(refused[reader], CheckpointCorruptError), (reader, refused[reader])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restored = state_for(0)
        info = outcome(lambda: Saver().restore(restored, directory))
    assert info.step == 1 and restored["meta"]["step"] == 1
    assert all(w.filename == __file__ for w in caught), [w.filename for w in caught]
    text = " ".join(str(w.message) for w in caught)
    assert "ckpt-000000000002" in text and "step 1" in text and "trainhooks verify" in text, text

    with Saver() as saver:  # a bad file never blocks writing the next checkpoint
        saver.save(state_for(3), directory, 3)
    assert outcome(lambda: trainhooks.latest_checkpoint(directory)).step == 3

    structural = 1 if forgery.structural else 0
    assert run_cli("verify", victim, capsys=capsys) == structural
    assert run_cli("show", victim, capsys=capsys) in (0, 1)
    assert run_cli("show", "--json", victim, capsys=capsys) in (0, 1)
    assert run_cli("ls", directory, capsys=capsys) == 0
    assert run_cli("ls", "--json", directory, capsys=capsys) == 0
    assert run_cli("verify", directory, capsys=capsys) == structural
    assert run_cli("diff", good, victim, capsys=capsys) in (0, 1)
    assert run_cli("export", victim, tmp_path / "out.safetensors", capsys=capsys) == structural
    assert run_cli("prune", "--dry-run", "--keep", "1", directory, capsys=capsys) == 0


def test_restore_of_a_symlinked_checkpoint_directory_is_refused(tmp_path: Path) -> None:
    directory, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    with Saver() as saver:
        saver.save(state_for(1), directory, 1)
        saver.save(state_for(2), elsewhere, 2)
    os.symlink(elsewhere / "ckpt-000000000002", directory / "ckpt-000000000002")
    with pytest.raises(trainhooks.CheckpointError, match="symlink"):
        Saver().restore(state_for(0), directory, step=2)
    restored = state_for(0)
    assert Saver().restore(restored, directory).step == 1
    COUNTS["inputs"] += 1


# -- memory: parse work is bounded before the content is trusted --------------------------

MIB = 1024 * 1024
PARSE_BYTES_PER_BYTE = 30  # json.loads of the worst JSON (empty objects) costs ~25 per byte


def peak_of(call: Callable[[], Any]) -> int:
    """Peak bytes traced while ``call`` runs (its result or typed error discarded)."""
    tracemalloc.start()
    try:
        outcome(call)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def huge_manifests(template: bytes, size: int) -> dict[str, tuple[bytes, int]]:
    """Hostile manifests of about ``size`` bytes, each with the peak a reader may reach."""
    body = json.loads(template)
    filler = (size - len(template)) // 3
    sealed_objects = {**body, "metadata": {"a": [{}] * filler}}
    deep = {**body, "metadata": {"a": json.loads("[" * 900 + "]" * 900)}}
    return {
        "unsealed_list_of_objects": (b"[" + b"{}," * filler + b"{}]", 3 * size),
        "sealed_list_of_objects": (seal(sealed_objects), PARSE_BYTES_PER_BYTE * size),
        "sealed_900_deep": (seal(deep), 3 * size),
        "one_byte_over_the_cap": (b" " * (MAX_MANIFEST_BYTES + 1), MIB),
    }


def test_reader_memory_is_bounded_by_a_small_multiple_of_the_manifest(
    pristine: Path, tmp_path: Path
) -> None:
    import shutil

    template = (pristine / "ckpt-000000000002" / MANIFEST).read_bytes()
    figures: dict[str, float] = {}
    for name, (manifest, bound) in huge_manifests(template, 4 * MIB).items():
        directory = tmp_path / name
        shutil.copytree(pristine, directory)
        victim = directory / "ckpt-000000000002"
        (victim / MANIFEST).write_bytes(manifest)
        COUNTS["inputs"] += 1
        readers: dict[str, Callable[[], Any]] = {
            "latest": lambda: trainhooks.latest_checkpoint(directory),  # noqa: B023
            "list": lambda: trainhooks.list_checkpoints(directory),  # noqa: B023
            "info": lambda: trainhooks.checkpoint_info(victim),  # noqa: B023
            "verify": lambda: trainhooks.verify_checkpoint(victim),  # noqa: B023
            "load": lambda: trainhooks.load(victim),  # noqa: B023
        }
        for reader, call in readers.items():
            peak = peak_of(call)
            assert peak <= bound, f"{name}: {reader} peaked at {peak:,} bytes (bound {bound:,})"
            figures[f"{name}_{reader}"] = round(peak / max(len(manifest), 1), 1)
    report_figure("hostile_manifest_memory_peak_per_manifest_byte", **figures)
