"""Restore keeps the target's own containers: named tuples, tuple subclasses, OrderedDict,
dataclasses (refilled in place, or rebuilt when frozen) and bytearray; without a target
(and in ``load``) what comes back is the documented plain form, and no class is imported
by a name read from the checkpoint."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

from trainhooks import CheckpointFormatError, Saver, StateMismatchError, list_checkpoints, load


class Moments(NamedTuple):
    count: int
    mu: np.ndarray
    nu: np.ndarray


@dataclasses.dataclass
class Trainer:
    step: int
    weights: np.ndarray
    schedule: Any = None


@dataclasses.dataclass(frozen=True)
class Frozen:
    scale: float
    table: np.ndarray
    derived: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "derived", int(self.table.size))


def _save(state: dict[str, Any], directory: Path) -> Path:
    with Saver() as saver:
        return saver.save(state, directory, step=1).path


def test_a_named_tuple_target_is_rebuilt_as_its_own_type(tmp_path: Path) -> None:
    _save({"opt": (Moments(3, np.arange(2.0), np.ones(2)), ())}, tmp_path)
    state = {"opt": (Moments(0, np.zeros(2), np.zeros(2)), ())}
    Saver().restore(state, tmp_path)
    moments = state["opt"][0]
    assert type(moments) is Moments and type(state["opt"]) is tuple
    assert moments.count == 3 and moments.mu.tolist() == [0.0, 1.0]


def test_a_tuple_subclass_target_keeps_its_type(tmp_path: Path) -> None:
    _save({"shape": torch.Size([2, 3])}, tmp_path)
    state = {"shape": torch.Size([0, 0])}
    Saver().restore(state, tmp_path)
    assert type(state["shape"]) is torch.Size and state["shape"] == torch.Size([2, 3])


def test_ordered_dict_is_refilled_in_place_and_kept_without_a_target(tmp_path: Path) -> None:
    saved = OrderedDict([("b", np.ones(2)), ("a", 1)])
    path = _save({"od": saved}, tmp_path)
    target = OrderedDict([("b", np.zeros(2)), ("a", 0)])
    state: dict[str, Any] = {"od": target}
    Saver().restore(state, tmp_path)
    assert state["od"] is target and target["a"] == 1 and target["b"].tolist() == [1.0, 1.0]
    fresh: dict[str, Any] = {"od": None}
    Saver().restore(fresh, tmp_path)
    assert type(fresh["od"]) is OrderedDict and list(fresh["od"]) == ["b", "a"]
    assert type(load(path)["od"]) is OrderedDict


def test_a_dataclass_is_refilled_in_place(tmp_path: Path) -> None:
    _save({"trainer": Trainer(7, np.arange(3.0), {"lr": 0.1})}, tmp_path)
    target = Trainer(0, np.zeros(3))
    weights = target.weights
    state: dict[str, Any] = {"trainer": target}
    Saver().restore(state, tmp_path)
    assert state["trainer"] is target and target.weights is weights
    assert target.step == 7 and weights.tolist() == [0.0, 1.0, 2.0]
    assert target.schedule == {"lr": 0.1}


def test_a_frozen_dataclass_is_rebuilt_from_the_target(tmp_path: Path) -> None:
    _save({"cfg": Frozen(0.5, np.arange(4))}, tmp_path)
    target = Frozen(1.0, np.zeros(4, np.int64))
    state: dict[str, Any] = {"cfg": target}
    Saver().restore(state, tmp_path)
    rebuilt = state["cfg"]
    assert type(rebuilt) is Frozen and rebuilt is not target
    assert rebuilt.scale == 0.5 and rebuilt.table.tolist() == [0, 1, 2, 3]
    assert rebuilt.derived == 4 and target.scale == 1.0


def test_dataclass_fields_that_differ_are_refused_before_anything_changes(tmp_path) -> None:
    @dataclasses.dataclass
    class Other:
        step: int
        weights: np.ndarray

    _save({"w": np.ones(2), "trainer": Other(3, np.ones(3))}, tmp_path)
    first, target = np.zeros(2), Trainer(0, np.zeros(3))
    with pytest.raises(StateMismatchError, match=r"\['schedule'\]"):
        Saver().restore({"w": first, "trainer": target}, tmp_path)
    assert first.tolist() == [0.0, 0.0] and target.step == 0
    Saver().restore({"w": first, "trainer": target}, tmp_path, strict=False)
    assert target.step == 3 and target.schedule is None  # kept: not in the checkpoint


def test_records_and_named_tuples_without_a_target_come_back_plain(tmp_path: Path) -> None:
    path = _save(
        {"trainer": Trainer(1, np.ones(1)), "m": Moments(2, np.ones(1), np.ones(1))}, tmp_path
    )
    state: dict[str, Any] = {"trainer": None, "m": None}
    Saver().restore(state, tmp_path)
    loaded = load(path)
    for plain in (state, loaded):
        assert type(plain["trainer"]) is dict and set(plain["trainer"]) == {
            "step",
            "weights",
            "schedule",
        }
        assert type(plain["m"]) is tuple and plain["m"][0] == 2


def test_bytearray_is_refilled_in_place_and_kept_without_a_target(tmp_path: Path) -> None:
    path = _save({"buf": bytearray(b"\x00abc"), "raw": b"xyz"}, tmp_path)
    target = bytearray(4)
    state: dict[str, Any] = {"buf": target, "raw": None}
    Saver().restore(state, tmp_path)
    assert state["buf"] is target and target == bytearray(b"\x00abc")
    loaded = load(path)
    assert type(loaded["buf"]) is bytearray and type(loaded["raw"]) is bytes


def test_a_parameter_without_a_target_comes_back_as_a_parameter(tmp_path: Path) -> None:
    path = _save({"p": torch.nn.Parameter(torch.arange(3.0)), "t": torch.ones(2)}, tmp_path)
    state: dict[str, Any] = {"p": None, "t": None}
    Saver().restore(state, tmp_path)
    assert type(state["p"]) is torch.nn.Parameter and state["p"].requires_grad
    assert state["p"].tolist() == [0.0, 1.0, 2.0]
    assert type(state["t"]) is torch.Tensor
    assert type(load(path)["p"]) is np.ndarray  # load needs no framework


def test_a_callable_is_refused_outside_a_record_and_kept_from_the_target_inside(
    tmp_path: Path,
) -> None:
    with pytest.raises(CheckpointFormatError, match=r"state\['fn'\]"):
        _save({"fn": np.sum}, tmp_path)
    _save({"trainer": Trainer(2, np.ones(1), np.sum)}, tmp_path / "rec")
    target = Trainer(0, np.zeros(1), np.mean)
    Saver().restore({"trainer": target}, tmp_path / "rec")
    assert target.step == 2 and target.schedule is np.mean
    assert load(list_checkpoints(tmp_path / "rec")[-1].path)["trainer"]["schedule"] is None


def test_load_never_imports_the_class_a_record_names(tmp_path: Path) -> None:
    """A checkpoint of a dataclass from a module only the saving process could import
    loads and restores as a dict in a process that never imports that module."""
    module = tmp_path / "mod" / "planted_record.py"
    module.parent.mkdir()
    module.write_text(
        "import dataclasses\n@dataclasses.dataclass\nclass Planted:\n    value: int\n"
    )
    saver = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[2])
        import planted_record
        from trainhooks import Saver
        Saver().save({"r": planted_record.Planted(5)}, sys.argv[1], step=1)
        """
    )
    reader = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[2])  # importable, yet never imported
        from trainhooks import Saver, list_checkpoints, load
        plain = load(list_checkpoints(sys.argv[1])[-1].path)
        state = {"r": None}
        Saver().restore(state, sys.argv[1])
        assert plain == {"r": {"value": 5}} and state == plain, (plain, state)
        print("planted_record" in sys.modules)
        """
    )
    outputs = [
        subprocess.run(
            [sys.executable, "-c", code, os.fspath(tmp_path / "ckpt"), os.fspath(module.parent)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for code in (saver, reader)
    ]
    for result in outputs:
        assert result.returncode == 0, result.stderr
    assert outputs[1].stdout.strip() == "False"
