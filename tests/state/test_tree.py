"""Nested containers, Python values and user objects round-trip exactly, types and keys kept."""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from _support.trees import assert_same_tree
from trainhooks import Saver, load

SCALARS: dict[str, Any] = {
    "int": 7,
    "negative": -3,
    "big": 2**100 + 1,
    "negative_big": -(2**70),
    "float": 0.1,
    "neg_zero": -0.0,
    "nan": float("nan"),
    "inf": float("inf"),
    "neg_inf": float("-inf"),
    "tiny": 5e-324,
    "true": True,
    "false": False,
    "none": None,
    "text": "héllo\nwörld \x00 ✓",
    "empty_text": "",
}


def _round_trip(state: dict[str, Any], template: dict[str, Any], directory: Path) -> None:
    with Saver() as saver:
        saver.save(state, directory, step=1)
        saver.restore(template, directory)


def _blank(value: Any) -> Any:
    """Same structure and dtypes, different values: proves restore really writes."""
    if isinstance(value, np.ndarray):
        return np.zeros_like(value)
    if isinstance(value, dict):
        return {k: _blank(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_blank(v) for v in value)
    if isinstance(value, np.generic):
        return value  # restored by assignment; comparing bits is enough
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return type(value)(0 if value else 1)
    if isinstance(value, str):
        return value + "~"
    return value


def test_python_scalars_strings_and_none_round_trip(tmp_path: Path) -> None:
    template = _blank(SCALARS)
    _round_trip(dict(SCALARS), template, tmp_path)
    assert_same_tree(template, SCALARS)
    assert math.copysign(1.0, template["neg_zero"]) == -1.0


def test_nested_containers_keep_int_keys_tuples_and_order(tmp_path: Path) -> None:
    state = {
        "tree": {
            0: {"step": 3, "m": np.arange(4, dtype=np.float32)},
            1: {"step": 3, "m": np.ones((2, 2), np.float64)},
            "1": "a string key that looks like the int key 1",
            -5: [1, (2.5, "x"), [], {}, ()],
            2**40: ("int8", None),
        },
        "betas": (0.9, 0.999),
        "list_of_arrays": [np.zeros(3, np.int64), np.full((1,), 7, np.uint8)],
        "empty": {},
    }
    template = _blank(state)
    _round_trip(state, template, tmp_path)
    assert_same_tree(template, state)


def test_keys_with_separators_do_not_collide(tmp_path: Path) -> None:
    state = {
        "a.b": np.full(2, 1.0),
        "a": {"b": np.full(2, 2.0), "b.c": np.full(2, 3.0), "b/c": np.full(2, 4.0)},
        "a/b": np.full(2, 5.0),
        "": {"": np.full(2, 6.0)},
        "../escape": np.full(2, 7.0),
        "name with spaces and ünïcode": np.full(2, 8.0),
    }
    template = _blank(state)
    _round_trip(state, template, tmp_path)
    assert_same_tree(template, state)
    assert not (tmp_path.parent / "escape").exists()
    assert not (tmp_path / "escape").exists()


class _Counter:
    """A user object following the state_dict protocol, with no torch anywhere."""

    def __init__(self, count: int = 0) -> None:
        self.count = count
        self.history: list[float] = []
        self.table = np.zeros(3, np.int32)

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "history": list(self.history), "table": self.table}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = state["count"]
        self.history = list(state["history"])
        self.table = np.array(state["table"], dtype=np.int32)


def test_user_class_with_state_dict_protocol_round_trips(tmp_path: Path) -> None:
    counter = _Counter(41)
    counter.history = [0.5, float("inf")]
    counter.table[:] = [1, -2, 3]
    fresh = _Counter()
    _round_trip({"counter": counter}, {"counter": fresh}, tmp_path)
    assert fresh.count == 41
    assert fresh.history == [0.5, float("inf")]
    np.testing.assert_array_equal(fresh.table, [1, -2, 3])


def test_load_returns_plain_nested_values(tmp_path: Path) -> None:
    state = {"counter": _Counter(5), "tree": {3: np.arange(3)}, "lr": 0.5, "name": "run"}
    with Saver() as saver:
        info = saver.save(state, tmp_path, step=9)
    loaded = load(info.path)
    assert loaded["counter"]["count"] == 5
    assert list(loaded["tree"]) == [3]
    np.testing.assert_array_equal(loaded["tree"][3], np.arange(3))
    assert loaded["lr"] == 0.5 and loaded["name"] == "run"


# ---- property test: random nested states round-trip bit-exactly ----

_DTYPES = [
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
_arrays = st.sampled_from(_DTYPES).flatmap(
    lambda dtype: hnp.arrays(
        np.dtype(dtype), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
    )
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.just(float("nan"))
    | st.text(max_size=8)
    | st.sampled_from(_DTYPES).flatmap(lambda dtype: hnp.from_dtype(np.dtype(dtype)))
)
_keys = st.text(max_size=6) | st.integers(min_value=-(2**63), max_value=2**64)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(_keys, children, max_size=4)
    )


_values = st.recursive(_scalars | _arrays, _containers, max_leaves=12)
_states = st.dictionaries(st.text(min_size=1, max_size=8), _values, min_size=1, max_size=4)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(state=_states)
def test_random_nested_states_round_trip_bit_exact(state: dict[str, Any]) -> None:
    expected = copy.deepcopy(state)
    template = _blank(state)
    with tempfile.TemporaryDirectory() as directory:
        _round_trip(state, template, Path(directory))
    assert_same_tree(template, expected)
