"""The private TensorBoard scalar writer and the scalar conversion hooks rely on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainhooks._summary import ScalarWriter, as_scalar, is_scalar_like


def test_writers_of_one_directory_share_one_event_file(tmp_path):
    with ScalarWriter(tmp_path) as a, ScalarWriter(tmp_path) as b:
        a.add_scalar("loss", 0.5, step=1)
        b.add_scalars({"loss": 0.25, "acc": 0.75}, step=2)
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    assert [(e.step, e.value) for e in accumulator.Scalars("loss")] == [(1, 0.5), (2, 0.25)]
    assert [(e.step, e.value) for e in accumulator.Scalars("acc")] == [(2, 0.75)]


def test_a_closed_writer_refuses_writes_and_closing_twice_is_fine(tmp_path):
    writer = ScalarWriter(tmp_path)
    writer.close()
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.add_scalar("x", 1.0, 0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3.0),
        (0.5, 0.5),
        (np.float32(1.5), 1.5),
        (np.array(2.0), 2.0),
        (np.array([[4]]), 4.0),
        (torch.tensor(5.0, requires_grad=True) * 1, 5.0),
        (torch.tensor([6], dtype=torch.int64), 6.0),
        (torch.tensor(7.0, dtype=torch.bfloat16), 7.0),
    ],
)
def test_scalar_like_values_become_floats(value, expected):
    assert is_scalar_like(value)
    assert as_scalar(value) == expected


@pytest.mark.parametrize(
    "value", [True, "1", None, [1.0], np.zeros(2), torch.zeros(2), torch.tensor(True), 1j]
)
def test_other_values_are_not_scalars(value):
    assert not is_scalar_like(value)
    with pytest.raises(TypeError, match="one-element"):
        as_scalar(value)
