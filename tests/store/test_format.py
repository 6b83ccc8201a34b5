"""On-disk format: other tools read our tensors file unchanged, and no pickle is involved."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from trainhooks import Saver, load


def _state() -> dict:
    rng = np.random.default_rng(0)
    return {
        "model": {
            "w": rng.standard_normal((7, 5)).astype(np.float32),
            "b": rng.standard_normal(5).astype(np.float64),
        },
        "opt": {0: {"step": np.array(3.0, np.float32), "m": np.arange(4, dtype=np.int16)}},
        "flags": np.array([True, False, True]),
        "empty": np.zeros((0, 3), np.uint8),
        "lr": 0.25,
    }


def _arrays(tree: object) -> list[np.ndarray]:
    if isinstance(tree, np.ndarray):
        return [tree]
    if isinstance(tree, dict):
        return [a for v in tree.values() for a in _arrays(v)]
    if isinstance(tree, (list, tuple)):
        return [a for v in tree for a in _arrays(v)]
    return []


def _signature(array: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    return array.dtype.str, array.shape, np.ascontiguousarray(array).tobytes()


def test_safetensors_safe_open_and_load_file_read_our_tensors(tmp_path: Path) -> None:
    state = _state()
    with Saver() as saver:
        info = saver.save(state, tmp_path, step=7)
    path = os.fspath(info.path / "tensors.safetensors")
    with safe_open(path, framework="np") as f:
        opened = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    loaded = load_file(path)
    assert set(opened) == set(loaded)
    for name in opened:
        assert _signature(opened[name]) == _signature(loaded[name]), name
    expected = sorted(_signature(a) for a in _arrays(state))
    assert sorted(_signature(a) for a in opened.values()) == expected
    assert info.num_tensors == len(opened)


def test_safetensors_torch_reads_bfloat16_unchanged(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file as torch_load_file

    tensor = torch.randn(4, 6).to(torch.bfloat16)
    with Saver() as saver:
        info = saver.save({"layer": {"w": tensor}}, tmp_path, step=1)
    loaded = torch_load_file(os.fspath(info.path / "tensors.safetensors"))
    (only,) = loaded.values()
    assert only.dtype == torch.bfloat16
    assert torch.equal(only.view(torch.int16), tensor.view(torch.int16))


def test_tensor_names_in_the_file_follow_the_state_paths(tmp_path: Path) -> None:
    with Saver() as saver:
        info = saver.save(_state(), tmp_path, step=1)
    with safe_open(os.fspath(info.path / "tensors.safetensors"), framework="np") as f:
        names = set(f.keys())
    assert any("w" in name and "model" in name for name in names), names


def test_load_matches_what_was_saved(tmp_path: Path) -> None:
    state = _state()
    with Saver() as saver:
        info = saver.save(state, tmp_path, step=7)
    loaded = load(info.path)
    assert _signature(loaded["model"]["w"]) == _signature(state["model"]["w"])
    assert _signature(loaded["opt"][0]["m"]) == _signature(state["opt"][0]["m"])
    assert loaded["lr"] == 0.25
    assert loaded["empty"].shape == (0, 3)


def test_files_hold_no_pickle_and_manifest_is_json(tmp_path: Path) -> None:
    with Saver() as saver:
        info = saver.save(_state(), tmp_path, step=1)
    for path in info.path.iterdir():
        assert b"\x80\x04\x95" not in path.read_bytes()[:64], f"{path.name} looks like a pickle"
    manifest = json.loads((info.path / "manifest.json").read_bytes())
    assert manifest["step"] == 1


def test_saving_the_same_step_twice_replaces_it(tmp_path: Path) -> None:
    with Saver() as saver:
        saver.save({"w": np.zeros(3)}, tmp_path, step=5)
        saver.save({"w": np.ones(3)}, tmp_path, step=5)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("ckpt")] == [
        "ckpt-000000000005"
    ]
    assert load(tmp_path / "ckpt-000000000005")["w"].tolist() == [1.0, 1.0, 1.0]
