"""Random number generator states round-trip: after restore the next draws repeat exactly."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from trainhooks import RNGState, Saver

torch = pytest.importorskip("torch")


def _draw_global() -> tuple[list[float], list[float], list[float]]:
    return (
        [random.random() for _ in range(3)],
        np.random.rand(3).tolist(),
        torch.rand(3).tolist(),
    )


def test_rng_state_restores_python_numpy_and_torch_global_generators(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    _draw_global()  # move away from the seeded start
    state = {"rng": RNGState()}
    with Saver() as saver:
        saver.save(state, tmp_path, step=1)
        expected = _draw_global()
        _draw_global()
        saver.restore(state, tmp_path)
    assert _draw_global() == expected


def test_numpy_generator_restores_in_place(tmp_path: Path) -> None:
    generator = np.random.default_rng(7)
    generator.random(5)
    state = {"gen": generator}
    with Saver() as saver:
        saver.save(state, tmp_path, step=1)
        expected = generator.random(4)
        generator.random(10)
        saver.restore(state, tmp_path)
    assert state["gen"] is generator
    assert generator.random(4).tobytes() == expected.tobytes()


def test_numpy_generator_restores_into_a_fresh_generator(tmp_path: Path) -> None:
    generator = np.random.default_rng(11)
    generator.integers(0, 100, 3)
    with Saver() as saver:
        saver.save({"gen": generator}, tmp_path, step=1)
        fresh = np.random.default_rng(0)
        saver.restore({"gen": fresh}, tmp_path)
    assert fresh.integers(0, 2**62, 8).tolist() == generator.integers(0, 2**62, 8).tolist()


def test_torch_generator_restores_in_place(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(5)
    torch.rand(4, generator=generator)
    state = {"gen": generator}
    with Saver() as saver:
        saver.save(state, tmp_path, step=1)
        expected = torch.rand(6, generator=generator)
        torch.rand(6, generator=generator)
        saver.restore(state, tmp_path)
    assert state["gen"] is generator
    assert torch.equal(torch.rand(6, generator=generator), expected)


def test_rng_states_are_stored_as_json_not_pickle(tmp_path: Path) -> None:
    state = {"rng": RNGState(), "gen": np.random.default_rng(1)}
    with Saver() as saver:
        info = saver.save(state, tmp_path, step=1)
    for path in info.path.iterdir():
        head = path.read_bytes()[:2]
        assert head[:1] != b"\x80", f"{path.name} starts like a pickle stream"
    json.loads((info.path / "manifest.json").read_text())
