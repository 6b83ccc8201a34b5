"""A restore that is refused changes nothing: every leaf is checked before any byte is copied.

Each case saves a state whose *last* entry does not fit the target, so a restore that
copied as it went would already have overwritten the entries before it. The targets'
bytes (and objects' state_dicts) are compared with deep copies taken before the restore.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trainhooks import Saver, StateMismatchError


def _save(state: dict[str, Any], directory: Path) -> None:
    with Saver() as saver:
        saver.save(state, directory, step=1)


def _fingerprint(value: Any, owned: bool = True) -> Any:
    """Everything a restore could change (bytes, dtypes, shapes, and which of the caller's
    objects hold them: ``owned``, as opposed to a state_dict's fresh containers), as a plain
    comparable value."""
    ident = id(value) if owned else None
    if isinstance(value, torch.Tensor):
        raw = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        return ("tensor", ident, str(value.dtype), tuple(value.shape), raw.tobytes())
    if isinstance(value, np.ndarray):
        return ("array", ident, str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, np.random.Generator):
        return ("generator", ident, _fingerprint(value.bit_generator.state, owned=False))
    if callable(getattr(value, "state_dict", None)):
        return ("stateful", ident, _fingerprint(value.state_dict(), owned=False))
    if isinstance(value, dict):
        items = tuple((k, _fingerprint(v, owned)) for k, v in value.items())
        return ("dict", ident, items)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, ident, tuple(_fingerprint(v, owned) for v in value))
    return ("value", value)


def _refused_without_change(target: dict[str, Any], directory: Path, **kwargs: Any) -> str:
    before = _fingerprint(target)
    with pytest.raises(StateMismatchError) as caught:
        Saver().restore(target, directory, **kwargs)
    assert _fingerprint(target) == before, "a refused restore changed the caller's objects"
    return str(caught.value)


def test_tensor_shape_mismatch_after_a_good_tensor_changes_nothing(tmp_path: Path) -> None:
    _save({"a": torch.arange(4.0), "b": torch.arange(4.0)}, tmp_path)
    target = {"a": torch.zeros(4), "b": torch.zeros(3)}
    message = _refused_without_change(target, tmp_path)
    assert "['b']" in message and "[4]" in message and "[3]" in message


def test_numpy_shape_mismatch_after_a_good_array_changes_nothing(tmp_path: Path) -> None:
    _save({"a": np.arange(4.0), "nested": {"b": np.arange(4.0)}}, tmp_path)
    target = {"a": np.zeros(4), "nested": {"b": np.zeros(3)}}
    assert "['b']" in _refused_without_change(target, tmp_path)


def test_dtype_mismatch_after_a_good_tensor_changes_nothing(tmp_path: Path) -> None:
    _save({"a": torch.arange(4.0), "b": torch.arange(4.0)}, tmp_path)
    target = {"a": torch.zeros(4), "b": torch.zeros(4, dtype=torch.float64)}
    assert "cast=True" in _refused_without_change(target, tmp_path)


def test_list_length_mismatch_changes_nothing(tmp_path: Path) -> None:
    _save({"a": torch.arange(4.0), "layers": [torch.ones(2)] * 3}, tmp_path)
    target = {"a": torch.zeros(4), "layers": [torch.zeros(2), torch.zeros(2)]}
    message = _refused_without_change(target, tmp_path)
    assert "['layers']" in message and "3" in message and "2" in message


def test_nested_missing_key_with_strict_changes_nothing(tmp_path: Path) -> None:
    _save({"a": torch.arange(4.0), "block": {"w": torch.ones(2)}}, tmp_path)
    target = {"a": torch.zeros(4), "block": {"w": torch.zeros(2), "extra": torch.zeros(2)}}
    assert "extra" in _refused_without_change(target, tmp_path)


def test_module_whose_keys_do_not_fit_changes_nothing(tmp_path: Path) -> None:
    _save({"a": torch.arange(4.0), "model": torch.nn.Linear(4, 3)}, tmp_path)
    target = {"a": torch.zeros(4), "model": torch.nn.Linear(4, 3, bias=False)}
    assert "bias" in _refused_without_change(target, tmp_path)


def test_optimizer_whose_param_groups_do_not_fit_changes_nothing(tmp_path: Path) -> None:
    def build(groups: int) -> dict[str, Any]:
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
        if groups == 2:
            params = [{"params": model[0].parameters()}, {"params": model[1].parameters()}]
        else:
            params = [{"params": model.parameters()}]
        return {"model": model, "optimizer": torch.optim.SGD(params, lr=0.1, momentum=0.9)}

    saved = build(groups=2)
    saved["model"](torch.ones(1, 4)).sum().backward()
    saved["optimizer"].step()
    _save(saved, tmp_path)
    target = build(groups=1)
    assert "param" in _refused_without_change(target, tmp_path)


def test_numpy_generator_of_another_kind_changes_nothing(tmp_path: Path) -> None:
    _save({"a": np.arange(4.0), "gen": np.random.default_rng(3)}, tmp_path)
    target = {"a": np.zeros(4), "gen": np.random.Generator(np.random.MT19937(5))}
    assert "PCG64" in _refused_without_change(target, tmp_path)


def test_object_without_load_state_dict_changes_nothing(tmp_path: Path) -> None:
    _save({"a": torch.arange(4.0), "model": torch.nn.Linear(2, 2)}, tmp_path)
    target = {"a": torch.zeros(4), "model": torch.zeros(2)}
    assert "load_state_dict" in _refused_without_change(target, tmp_path)


def test_lists_of_plain_values_still_take_the_saved_length(tmp_path: Path) -> None:
    """Only containers holding arrays or objects are the caller's structure: a history list
    in a fresh template is simply replaced, as before."""
    _save({"history": [0.5, 0.25, 0.125], "meta": {"seen": 3}}, tmp_path)
    target: dict[str, Any] = {"history": [], "meta": {}}
    Saver().restore(target, tmp_path)
    assert target == {"history": [0.5, 0.25, 0.125], "meta": {"seen": 3}}


def test_without_strict_a_list_of_another_length_is_replaced(tmp_path: Path) -> None:
    _save({"layers": [torch.ones(2)] * 3}, tmp_path)
    target = {"layers": [torch.zeros(2)]}
    Saver().restore(target, tmp_path, strict=False)
    assert len(target["layers"]) == 3
    assert all(torch.equal(t, torch.ones(2)) for t in target["layers"])
