"""Restoring into a state of another shape or dtype fails clearly, unless a cast is asked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainhooks import Saver, StateMismatchError

torch = pytest.importorskip("torch")


def _save(state: dict, directory: Path) -> None:
    with Saver() as saver:
        saver.save(state, directory, step=4)


def test_tensor_shape_mismatch_names_the_key(tmp_path: Path) -> None:
    _save({"layer": {"weight": torch.ones(3, 4)}}, tmp_path)
    with pytest.raises(StateMismatchError, match="weight") as caught:
        Saver().restore({"layer": {"weight": torch.zeros(4, 3)}}, tmp_path)
    assert "(3, 4)" in str(caught.value) or "[3, 4]" in str(caught.value)
    assert caught.value.step == 4, "the error must carry the checkpoint's step"
    assert "ckpt-000000000004" in str(caught.value), "the message must name the checkpoint"


def test_tensor_shape_mismatch_is_refused_even_with_cast(tmp_path: Path) -> None:
    _save({"weight": torch.ones(3, 4)}, tmp_path)
    with pytest.raises(StateMismatchError, match="weight"):
        Saver().restore({"weight": torch.zeros(12)}, tmp_path, cast=True)


def test_tensor_dtype_mismatch_names_the_key_and_dtypes(tmp_path: Path) -> None:
    _save({"weight": torch.ones(2, 2, dtype=torch.float32)}, tmp_path)
    target = torch.zeros(2, 2, dtype=torch.bfloat16)
    with pytest.raises(StateMismatchError, match="weight") as caught:
        Saver().restore({"weight": target}, tmp_path)
    message = str(caught.value).lower()
    assert "float32" in message or "f32" in message
    assert not target.any(), "a refused restore must not have written into the target"


def test_tensor_dtype_mismatch_is_cast_when_asked(tmp_path: Path) -> None:
    source = torch.tensor([[1.5, -2.25], [1e-3, 3.0]], dtype=torch.float32)
    _save({"weight": source}, tmp_path)
    target = torch.zeros(2, 2, dtype=torch.float64)
    Saver().restore({"weight": target}, tmp_path, cast=True)
    assert target.dtype == torch.float64
    assert torch.equal(target, source.double())


def test_numpy_dtype_mismatch_and_cast(tmp_path: Path) -> None:
    _save({"table": np.arange(6, dtype=np.int64).reshape(2, 3)}, tmp_path)
    with pytest.raises(StateMismatchError, match="table"):
        Saver().restore({"table": np.zeros((2, 3), np.float32)}, tmp_path)
    state = {"table": np.zeros((2, 3), np.float32)}
    Saver().restore(state, tmp_path, cast=True)
    assert state["table"].dtype == np.float32
    np.testing.assert_array_equal(state["table"], np.arange(6).reshape(2, 3))


def test_numpy_shape_mismatch_names_the_key(tmp_path: Path) -> None:
    _save({"nested": {7: np.zeros(5)}}, tmp_path)
    with pytest.raises(StateMismatchError, match="7"):
        Saver().restore({"nested": {7: np.zeros(6)}}, tmp_path)


def test_module_shape_mismatch_names_the_parameter(tmp_path: Path) -> None:
    _save({"model": torch.nn.Linear(4, 3)}, tmp_path)
    with pytest.raises(StateMismatchError, match="weight"):
        Saver().restore({"model": torch.nn.Linear(4, 5)}, tmp_path)


def test_module_dtype_mismatch_refused_then_cast(tmp_path: Path) -> None:
    source = torch.nn.Linear(4, 3)
    _save({"model": source}, tmp_path)
    with pytest.raises(StateMismatchError, match=r"weight|bias"):
        Saver().restore({"model": torch.nn.Linear(4, 3).double()}, tmp_path)
    target = torch.nn.Linear(4, 3).double()
    Saver().restore({"model": target}, tmp_path, cast=True)
    assert target.weight.dtype == torch.float64
    assert torch.equal(target.weight.detach(), source.weight.detach().double())


def test_missing_key_in_checkpoint_is_a_mismatch(tmp_path: Path) -> None:
    _save({"a": np.zeros(2)}, tmp_path)
    with pytest.raises(StateMismatchError, match="b"):
        Saver().restore({"a": np.zeros(2), "b": np.zeros(2)}, tmp_path)
