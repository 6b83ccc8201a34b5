"""The pure comparisons behind ``show`` and ``diff`` (in-process: no files involved)."""

from __future__ import annotations

import numpy as np
import pytest

from trainhooks._cli._tree import compare_tensors, diff_trees, find_leaf, flatten, tensor_stats


def test_flatten_descends_dicts_and_tensor_lists_but_keeps_plain_lists_whole():
    tree = {"m": {"w": np.zeros(2)}, "rng": [1, 2, 3], "buffers": [np.ones(1), {"b": 2}]}
    leaves = flatten(tree)
    assert list(leaves) == ["m/w", "rng", "buffers/0", "buffers/1/b"]
    assert leaves["rng"] == [1, 2, 3]


def test_nan_in_the_same_place_is_equal_and_nan_against_a_number_is_infinite():
    same = compare_tensors("x", np.array([np.nan, 1.0]), np.array([np.nan, 1.0]))
    assert same is None
    moved = compare_tensors("x", np.array([np.nan, 1.0]), np.array([0.0, 1.0]))
    assert moved is not None and moved.num_changed == 1 and moved.max_abs == np.inf


def test_negative_zero_is_not_a_change_but_a_dtype_change_is():
    assert compare_tensors("x", np.array([0.0]), np.array([-0.0])) is None
    cast = compare_tensors("x", np.array([1.0], np.float32), np.array([1.0], np.float16))
    assert cast is not None and cast.num_changed == 0 and cast.new_dtype == "float16"


def test_relative_difference_is_against_the_tensor_scale():
    change = compare_tensors("x", np.array([0.0, 100.0]), np.array([1.0, 100.0]))
    assert change is not None
    assert change.max_abs == 1.0 and change.max_rel == pytest.approx(0.01)


def test_integer_tensors_diff_without_wrapping_around():
    change = compare_tensors("x", np.array([0], np.uint8), np.array([255], np.uint8))
    assert change is not None and change.max_abs == 255


def test_tensor_replaced_by_a_value_is_a_changed_value():
    result = diff_trees({"a": np.zeros(1)}, {"a": 0.0})
    assert [name for name, _, _ in result.changed_values] == ["a"]


def test_stats_of_an_empty_and_a_boolean_tensor():
    assert tensor_stats(np.zeros((0, 3), np.float32))["numel"] == 0
    stats = tensor_stats(np.array([True, True, False]))
    assert (stats["num_true"], stats["num_false"]) == (2, 1)


def test_find_leaf_reports_ambiguity_with_the_candidates():
    leaves = {"a/exp_avg": 1, "b/exp_avg": 2, "c/w": 3}
    assert find_leaf(leaves, "w") == "c/w"
    with pytest.raises(KeyError, match=r"ambiguous.*a/exp_avg.*b/exp_avg"):
        find_leaf(leaves, "exp_avg")
