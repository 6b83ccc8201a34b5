"""Fixtures for the CLI tests: real checkpoints written by ``trainhooks.Saver`` and a runner
for the real installed console script in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trainhooks

STEPS = (0, 10, 20)


@dataclass(frozen=True)
class Result:
    """One finished run of the console script."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def _command() -> list[str]:
    script = Path(sys.executable).parent / "trainhooks"
    return [str(script)] if script.exists() else [sys.executable, "-m", "trainhooks._cli"]


def run_cli(*args: str | os.PathLike[str], cwd: Path | None = None) -> Result:
    """Run ``trainhooks ARGS`` as a real subprocess and capture its outcome."""
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("TRAINHOOKS_DEBUG", None)
    proc = subprocess.run(
        [*_command(), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli() -> Callable[..., Result]:
    return run_cli


def make_run(directory: Path) -> list[trainhooks.CheckpointInfo]:
    """Three checkpoints of a real torch model + SGD momentum + NumPy arrays + plain values
    (11 tensors each)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    state: dict[str, Any] = {
        "model": model,
        "optimizer": optimizer,
        "ema": np.arange(6, dtype=np.float32).reshape(2, 3),
        "mask": np.array([True, False, True]),
        "scale": np.float64(0.5),  # a NumPy scalar is stored as a 0-d tensor
        "epoch": 0,
        "config": {"lr": 0.1, "name": "run-a"},
    }
    infos = []
    with trainhooks.Saver(max_to_keep=None) as saver:
        for step in STEPS:
            model(torch.randn(5, 4)).sum().backward()
            optimizer.step()
            state["epoch"] = step // 10
            infos.append(saver.save(state, directory, step))
    return infos


@pytest.fixture(scope="session")
def pristine_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory shared read-only by the tests; copy it (``run`` fixture) to modify."""
    directory = tmp_path_factory.mktemp("pristine") / "run"
    make_run(directory)
    return directory


@pytest.fixture
def run(pristine_run: Path, tmp_path: Path) -> Path:
    """A private copy of the three-checkpoint run, safe to corrupt or prune."""
    copy = tmp_path / "run"
    shutil.copytree(pristine_run, copy)
    return copy


def tensor_span(data_file: Path, name: str) -> tuple[int, int]:
    """Absolute file offsets of tensor ``name`` in a safetensors file (its public layout)."""
    raw = data_file.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    begin, end = json.loads(raw[8 : 8 + header_len])[name]["data_offsets"]
    return 8 + header_len + begin, 8 + header_len + end


def flip_byte(path: Path, offset: int) -> None:
    """Flip every bit of one byte in place (silent on-disk corruption)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


class Damage:
    """Ways to damage a checkpoint of a run, as a disk or an interrupted copy would."""

    @staticmethod
    def ckpt(run: Path, step: int) -> Path:
        return run / f"ckpt-{step:012d}"

    def flip_tensor(self, run: Path, step: int, tensor: str) -> Path:
        """Flip one byte inside ``tensor``'s data; return the data file."""
        data_file = self.ckpt(run, step) / "tensors.safetensors"
        begin, end = tensor_span(data_file, tensor)
        flip_byte(data_file, (begin + end) // 2)
        return data_file

    def truncate(self, run: Path, step: int, remove: int = 7) -> Path:
        """Cut the last ``remove`` bytes off the data file (the last tensor loses its tail)."""
        data_file = self.ckpt(run, step) / "tensors.safetensors"
        os.truncate(data_file, data_file.stat().st_size - remove)
        return data_file


@pytest.fixture
def damage() -> Damage:
    return Damage()
