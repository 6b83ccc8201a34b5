"""Staging for background saves: a snapshot holds the same bytes a synchronous save would
write, does not change when the state does, and refills the same buffers at the next save
(an array whose shape changed gets a new one; buffers of arrays gone are freed)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch

from trainhooks import CheckpointFormatError
from trainhooks._state._encode import encode_state
from trainhooks._state._staging import StagingBuffers


def snapshot(state: dict[str, Any], staging: StagingBuffers) -> dict[str, bytes]:
    staging.begin()
    _, tensors = encode_state(state, staging)
    staging.finish()()
    return {t.name: bytes(t.data) for t in tensors}


def written(state: dict[str, Any]) -> dict[str, bytes]:
    """The bytes a synchronous save writes for each tensor."""
    _, tensors = encode_state(state)
    return {t.name: bytes(t.data) for t in tensors}


def awkward_state() -> dict[str, Any]:
    """Arrays whose bytes are not simply their memory: views, flags, odd shapes, dtypes."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "transposed": base.t(),
        "sliced": base[:, ::2],
        "conj": torch.randn(5, dtype=torch.complex64).conj(),
        "neg": torch.randn(3, dtype=torch.complex64).conj().imag,
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.empty(0, 3),
        "bool": torch.tensor([True, False, True]),
        "bf16": torch.randn(7).to(torch.bfloat16),
        "np_big_endian": np.arange(6, dtype=">i4"),
        "np_fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "np_scalar": np.float32(1.5),
        "np_bf16": np.arange(4).astype(ml_dtypes.bfloat16),
        "jax": jnp.arange(5.0),
        "generator": torch.Generator().manual_seed(3),
        "model": torch.nn.Linear(3, 2),
    }


def test_a_snapshot_holds_exactly_the_bytes_a_synchronous_save_writes() -> None:
    state = awkward_state()
    assert snapshot(state, StagingBuffers()) == written(state)


def test_a_snapshot_does_not_change_when_the_state_does() -> None:
    weight = torch.zeros(1000)
    array = np.zeros(10)
    state = {"w": weight, "a": array, "model": torch.nn.Linear(2, 2)}
    staging = StagingBuffers()
    staging.begin()
    _, tensors = encode_state(state, staging)
    staging.finish()()
    before = written(state)

    weight.add_(1.0)
    array += 1.0
    with torch.no_grad():
        state["model"].weight.mul_(3.0)

    assert {t.name: bytes(t.data) for t in tensors} == before


def _pointers(staging: StagingBuffers) -> dict[str, int]:
    """Where each kept buffer's memory is (torch buffers are kept with their views)."""
    return {
        name: buffer.ctypes.data if isinstance(buffer, np.ndarray) else buffer.flat.data_ptr()
        for name, buffer in staging._kept.items()
    }


def test_the_next_snapshot_refills_the_same_buffers() -> None:
    state = {"w": torch.randn(256, 256), "n": np.ones(1000), "j": jnp.ones(8)}
    staging = StagingBuffers()
    snapshot(state, staging)
    first = _pointers(staging)

    state["w"].add_(1.0)
    state["n"] += 1
    assert snapshot(state, staging) == written(state)

    assert _pointers(staging) == first
    assert staging.nbytes == 256 * 256 * 4 + 1000 * 8 + 8 * 4


def test_a_reshaped_array_gets_a_new_buffer_and_a_removed_one_is_freed() -> None:
    staging = StagingBuffers()
    snapshot({"w": torch.zeros(10), "gone": torch.zeros(5)}, staging)

    state = {"w": torch.ones(20)}
    assert snapshot(state, staging) == written(state)

    assert set(staging._kept) == {"w"} and staging.nbytes == 80


def test_an_array_of_the_same_size_in_another_shape_or_dtype_reuses_the_memory() -> None:
    staging = StagingBuffers()
    snapshot({"w": torch.zeros(12), "n": np.zeros(12)}, staging)
    kept = _pointers(staging)

    for state in (
        {"w": torch.arange(12.0).reshape(3, 4), "n": np.arange(12.0).reshape(4, 3)},
        {"w": torch.arange(6, dtype=torch.float64), "n": np.arange(24, dtype=np.int32)},
    ):
        assert snapshot(state, staging) == written(state)
        assert _pointers(staging) == kept


def test_an_unsupported_value_keeps_the_buffers_for_next_time() -> None:
    staging = StagingBuffers()
    snapshot({"w": torch.zeros(10)}, staging)
    kept = _pointers(staging)

    staging.begin()
    with pytest.raises(CheckpointFormatError, match="object"):
        encode_state({"w": torch.zeros(10), "x": object()}, staging)
    staging.abort()

    assert _pointers(staging) == kept
