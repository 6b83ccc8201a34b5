"""Bare torch tensors and NumPy arrays round-trip bit-exactly, in place, dtype and shape kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _support.trees import assert_same_tree, tensor_bits
from trainhooks import CheckpointFormatError, Saver

torch = pytest.importorskip("torch")

TORCH_DTYPES = [
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
]
# Storable by the format (safetensors has codes for them) but rarer; a store may refuse
# them, but only with CheckpointFormatError at save time, never silently.
OPTIONAL_TORCH_DTYPES = [
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.complex64,
]
NUMPY_DTYPES = [
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
]


def _random_tensor(dtype: Any, shape: tuple[int, ...], seed: int = 0) -> Any:
    """Random bits of ``dtype``: every bit pattern, NaN payloads and subnormals included."""
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    itemsize = torch.empty((), dtype=dtype).element_size()
    raw = torch.randint(0, 256, (*shape, itemsize), dtype=torch.uint8, generator=generator)
    return raw.view(dtype).reshape(shape)


def _round_trip(state: dict[str, Any], template: dict[str, Any], directory: Path) -> None:
    with Saver() as saver:
        saver.save(state, directory, step=1)
        saver.restore(template, directory)


@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=str)
def test_torch_tensor_of_each_dtype_round_trips_in_place(dtype, tmp_path) -> None:
    shapes = {"matrix": (3, 5), "scalar": (), "empty": (0, 4), "vector": (7,)}
    state = {
        name: _random_tensor(dtype, shape, seed=i) for i, (name, shape) in enumerate(shapes.items())
    }
    template = {name: torch.zeros(shape, dtype=dtype) for name, shape in shapes.items()}
    targets = dict(template)
    _round_trip(state, template, tmp_path)
    assert_same_tree(template, state)
    for name, target in targets.items():
        assert template[name] is target, f"{name} was replaced instead of restored in place"


@pytest.mark.parametrize("dtype", OPTIONAL_TORCH_DTYPES, ids=str)
def test_rarer_torch_dtypes_round_trip_or_are_refused_clearly(dtype, tmp_path):
    state = {"t": _random_tensor(dtype, (4, 3))}
    template = {"t": torch.zeros((4, 3), dtype=dtype)}
    try:
        _round_trip(state, template, tmp_path)
    except CheckpointFormatError as err:
        assert "t" in str(err)
        return
    assert_same_tree(template, state)


def test_non_contiguous_tensors_round_trip(tmp_path: Path) -> None:
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    state = {
        "transposed": base.t(),
        "sliced": base[::2, 1::3],
        "expanded": torch.arange(4.0).expand(3, 4),
        "narrowed": base.narrow(1, 2, 5),
    }
    expected = {name: t.clone() for name, t in state.items()}
    template = {
        "transposed": torch.zeros(6, 10).t(),
        "sliced": torch.zeros(3, 3),
        "expanded": torch.zeros(3, 4),
        "narrowed": torch.zeros(6, 5),
    }
    _round_trip(state, template, tmp_path)
    assert_same_tree({k: v.contiguous() for k, v in template.items()}, expected)


def test_restore_into_non_contiguous_target_fills_the_view(tmp_path: Path) -> None:
    source = torch.arange(12, dtype=torch.int32).reshape(3, 4)
    backing = torch.zeros(4, 3, dtype=torch.int32)
    view = backing.t()  # shape (3, 4), not contiguous
    _round_trip({"w": source}, {"w": view}, tmp_path)
    assert torch.equal(backing.t(), source)


def test_tensor_requiring_grad_round_trips(tmp_path: Path) -> None:
    weight = torch.randn(4, 4, requires_grad=True)
    target = torch.zeros(4, 4, requires_grad=True)
    _round_trip({"w": weight}, {"w": target}, tmp_path)
    assert tensor_bits(target).tobytes() == tensor_bits(weight).tobytes()
    assert target.requires_grad


@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_numpy_array_of_each_dtype_round_trips(dtype, tmp_path) -> None:
    rng = np.random.default_rng(3)
    shapes = {"matrix": (4, 3), "scalar": (), "empty": (2, 0), "cube": (2, 3, 2)}
    state = {}
    for name, shape in shapes.items():
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if dtype == "bool":
            state[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            state[name] = np.frombuffer(rng.bytes(size), dtype=dtype).reshape(shape).copy()
    state["fortran"] = np.asfortranarray(state["matrix"])
    state["strided"] = state["cube"][:, ::2, ::-1]
    template = {name: np.zeros_like(value) for name, value in state.items()}
    _round_trip(state, template, tmp_path)
    assert_same_tree(template, {k: v.copy(order="C") for k, v in state.items()})


def test_numpy_complex64_round_trips_or_is_refused_clearly(tmp_path) -> None:
    state = {"z": (np.arange(6) + 1j * np.arange(6)).astype(np.complex64)}
    template = {"z": np.zeros(6, np.complex64)}
    try:
        _round_trip(state, template, tmp_path)
    except CheckpointFormatError:
        return
    assert_same_tree(template, state)


def test_unstorable_array_dtype_is_refused_with_format_error(tmp_path: Path) -> None:
    state = {"objects": np.array([object(), object()], dtype=object)}
    with Saver() as saver, pytest.raises(CheckpointFormatError, match="objects"):
        saver.save(state, tmp_path, step=1)
    assert not any(p.name.startswith("ckpt-") for p in tmp_path.iterdir())
