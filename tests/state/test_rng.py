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


def _draw_cpu() -> list[float]:
    return [random.random(), float(np.random.rand()), float(torch.rand(1))]


def test_device_states_fit_this_process_or_warn_what_was_skipped() -> None:
    """The plan behind the CUDA/MPS restore, with real CPU byte tensors (the device calls
    around it need a GPU, which the test machines do not have)."""
    from trainhooks._state._adapters._torch import device_rng_states

    saved = [torch.full((16,), i, dtype=torch.uint8) for i in range(2)]
    states, problem = device_rng_states(saved, 2, "CUDA")
    assert problem is None and [s.tolist() for s in states] == [s.tolist() for s in saved]
    states, problem = device_rng_states([s.numpy() for s in saved], 1, "CUDA")
    assert len(states) == 1 and states[0].dtype == torch.uint8
    assert problem is not None and "other 1 skipped" in problem
    states, problem = device_rng_states(saved, 4, "CUDA")
    assert len(states) == 2 and problem is not None and "keep their current state" in problem
    states, problem = device_rng_states(saved, 0, "CUDA")
    assert states == [] and problem is not None and "no CUDA device" in problem
    assert device_rng_states([], 0, "MPS") == ([], None)
    with pytest.raises(ValueError, match="flat uint8"):
        device_rng_states([torch.zeros(2, 8, dtype=torch.uint8)], 1, "CUDA")


class _GpuMachineRNG:
    """What ``RNGState`` saves on a machine with two CUDA devices: the same tree, with the
    ``cuda`` list a GPU process records (its states are 16-byte seed/offset tensors)."""

    def state_dict(self) -> dict:
        state = RNGState().state_dict()
        state["torch"]["cuda"] = [torch.full((16,), i, dtype=torch.uint8) for i in range(2)]
        return state

    def load_state_dict(self, state: dict) -> None:
        raise AssertionError("only saved from")


def test_a_checkpoint_with_cuda_states_restores_on_a_cpu_machine_with_a_warning(
    tmp_path: Path,
) -> None:
    with Saver() as saver:
        saver.save({"rng": _GpuMachineRNG()}, tmp_path, step=1)
    expected = _draw_cpu()
    _draw_cpu()
    with pytest.warns(UserWarning, match="CUDA random state of 2 device"):
        Saver().restore({"rng": RNGState()}, tmp_path)
    assert _draw_cpu() == expected


def test_a_checkpoint_from_before_device_generators_still_restores(tmp_path: Path) -> None:
    """Earlier checkpoints hold torch's CPU state as one tensor, not a dict of devices."""

    class OldRNG(_GpuMachineRNG):
        def state_dict(self) -> dict:
            state = RNGState().state_dict()
            state["torch"] = state["torch"]["cpu"]
            return state

    with Saver() as saver:
        saver.save({"rng": OldRNG()}, tmp_path, step=1)
    expected = _draw_cpu()
    _draw_cpu()
    Saver().restore({"rng": RNGState()}, tmp_path)
    assert _draw_cpu() == expected
