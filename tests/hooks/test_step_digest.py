"""What ``ResumeCheckHook`` records of a step's value, and when two records differ."""

from __future__ import annotations

import math

import numpy as np
import torch

from trainhooks._hooks._step_digest import MAX_NAMES, digest, first_difference


def test_numbers_and_nested_results_are_named_by_their_path() -> None:
    result = {"loss": 0.5, "parts": (1, 2.5), "flag": True, "tag": "text", "none": None}
    assert digest(result) == {"flag": 1.0, "loss": 0.5, "parts.0": 1.0, "parts.1": 2.5}
    assert digest(3.25) == {"": 3.25}
    assert digest(None) == {}


def test_scalar_tensors_and_arrays_keep_their_value() -> None:
    loss = torch.tensor(0.125, requires_grad=True) * 2
    assert digest({"loss": loss, "acc": np.float32(0.75)}) == {"acc": 0.75, "loss": 0.25}


def test_arrays_reduce_to_a_sum_and_a_positional_sum_that_sees_permutations() -> None:
    values = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    reduced = digest({"logits": values})
    assert reduced == {"logits.#sum": 15.0, "logits.#pos": 35.0}  # cumsum 0,1,3,6,10,15
    permuted = digest({"logits": values.flip(0)})
    assert permuted["logits.#sum"] == 15.0 and permuted["logits.#pos"] != 35.0
    assert digest({"logits": values.numpy()}) == reduced


def test_a_huge_result_is_cut_to_a_bounded_number_of_names() -> None:
    assert len(digest({f"k{i:03d}": float(i) for i in range(500)})) == MAX_NAMES


def test_differences_respect_the_relative_tolerance() -> None:
    assert first_difference({"loss": 1.0}, {"loss": 1.0 + 1e-9}, 1e-6, 0.0) is None
    assert first_difference({"loss": 1.0}, {"loss": 1.001}, 1e-6, 0.0) == ("loss", 1.0, 1.001)
    assert first_difference({"loss": 0.0}, {"loss": 1e-12}, 1e-6, 1e-9) is None


def test_equal_nans_match_and_missing_names_differ() -> None:
    assert first_difference({"loss": math.nan}, {"loss": math.nan}, 1e-6, 0.0) is None
    assert first_difference({"loss": math.inf}, {"loss": math.inf}, 1e-6, 0.0) is None
    assert first_difference({"loss": 1.0}, {"loss": math.nan}, 1e-6, 0.0) is not None
    assert first_difference({"a": 1.0}, {"a": 1.0, "b": 2.0}, 0.0, 0.0) == ("b", None, 2.0)
    assert first_difference({"a": 1.0}, {}, 0.0, 0.0) == ("a", 1.0, None)
