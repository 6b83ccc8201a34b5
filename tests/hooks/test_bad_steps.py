"""Where NanTensorHook's rollback goes: the newest checkpoint before the bad step whose
floating-point values are all finite (checked in the checkpoint itself)."""

from __future__ import annotations

import numpy as np
import torch

import trainhooks as th
from trainhooks._hooks._bad_steps import all_finite, rollback_target


def test_the_target_is_the_newest_checkpoint_before_the_bad_step_with_finite_values(tmp_path):
    with th.Saver(max_to_keep=None) as saver:
        saver.save({"w": np.ones(3), "lr": 0.1}, tmp_path, 2)
        saver.save({"w": np.array([1.0, np.nan, 1.0]), "lr": 0.1}, tmp_path, 4)
        saver.save({"w": torch.tensor([1.0, float("inf")], dtype=torch.bfloat16)}, tmp_path, 5)
        saver.save({"w": np.ones(3), "lr": float("inf")}, tmp_path, 6)
        saver.save({"w": np.ones(3), "lr": 0.1}, tmp_path, 8)
    assert rollback_target(tmp_path, 9).step == 8
    assert rollback_target(tmp_path, 8).step == 2  # 6, 5 and 4 hold inf or NaN
    assert rollback_target(tmp_path, 2) is None  # nothing before the first checkpoint


def test_all_finite_looks_at_floating_values_of_any_kind_and_depth():
    assert all_finite({"a": [np.ones(2, np.float16), {"b": 1.5}], "n": np.arange(3), "s": "x"})
    assert not all_finite({"a": [{"b": np.array([np.inf], np.float32)}]})
    assert not all_finite({"a": (1.0, float("nan"))})
    assert not all_finite({"c": np.array([complex(1, np.inf)])})
    assert not all_finite({"s": np.float64("nan")})
