"""``export_safetensors(..., only=...)``: one entry of the state, loadable by its own object.

An export of the whole state holds optimizer moments and RNG states under names such as
``model/fc.weight``; ``only="model"`` writes the model alone, named as its ``state_dict()``
names it, so ``model.load_state_dict(safetensors.torch.load_file(path))`` works as is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from safetensors import safe_open

import trainhooks


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        self.norm = torch.nn.BatchNorm1d(3)  # buffers too: running stats, a counter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.norm(self.fc(x)))


def trained_state() -> dict[str, Any]:
    torch.manual_seed(0)
    model, generator = Net(), Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    loss = model(torch.randn(8, 4)).square().mean()
    loss.backward()
    optimizer.step()
    return {
        "model": model,
        "optimizer": optimizer,
        "nets": {"generator": generator},
        "rng": torch.Generator().manual_seed(3),
        "progress": {"epoch": 2},
    }


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    state = trained_state()
    with trainhooks.Saver() as saver:
        info = saver.save(state, tmp_path / "run", 7)
    return info.path, state


def test_only_model_loads_straight_into_a_fresh_model(
    checkpoint: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    path, state = checkpoint
    out = trainhooks.export_safetensors(path, tmp_path / "model.safetensors", only="model")

    fresh = Net()
    fresh.load_state_dict(safetensors.torch.load_file(out))  # strict: the same keys exactly
    for name, value in state["model"].state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name
    with safe_open(str(out), "pt") as f:
        names = set(f.keys())
        metadata = f.metadata()
    assert names == set(state["model"].state_dict())  # no optimizer moments, no RNG
    assert metadata["trainhooks_only"] == "model" and metadata["trainhooks_step"] == "7"
    tree = json.loads(metadata["trainhooks_tree"])
    assert tree["type"] == "stateful"
    assert {node["name"] for _, node in tree["state"]["items"]} == names


def test_only_takes_a_path_of_keys(checkpoint: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    path, state = checkpoint
    out = trainhooks.export_safetensors(path, tmp_path / "g.safetensors", only="nets/generator")

    fresh = Net()
    fresh.load_state_dict(safetensors.torch.load_file(out))
    assert torch.equal(fresh.fc.weight, state["nets"]["generator"].fc.weight)


def test_only_naming_one_tensor_exports_it_under_its_own_name(tmp_path: Path) -> None:
    with trainhooks.Saver() as saver:
        info = saver.save({"ema": np.arange(3.0), "w": np.ones(2)}, tmp_path / "run", 1)
    out = trainhooks.export_safetensors(info.path, tmp_path / "ema.safetensors", only="ema")

    with safe_open(str(out), "np") as f:
        assert list(f.keys()) == ["ema"]
        np.testing.assert_array_equal(f.get_tensor("ema"), np.arange(3.0))


@pytest.mark.parametrize(
    ("only", "match"),
    [
        ("modle", r"no entry 'modle'; the entries of the state are \['model', 'nets'"),
        ("nets/gen", r"no entry 'nets/gen'; the entries of nets are \['generator'\]"),
        ("progress", "holds no tensor"),
    ],
)
def test_an_entry_without_tensors_is_refused_and_nothing_is_written(
    checkpoint: tuple[Path, dict[str, Any]], tmp_path: Path, only: str, match: str
) -> None:
    out = tmp_path / "out.safetensors"
    with pytest.raises(trainhooks.StateMismatchError, match=match):
        trainhooks.export_safetensors(checkpoint[0], out, only=only)
    assert not out.exists()
