"""A pickle planted in a checkpoint is refused and never executed.

The payload's ``__reduce__`` calls ``os.mkdir(marker)``: unpickling it anywhere would
create the marker directory (the test first proves that it does). Planted as the data file
or as the manifest of the newest checkpoint, raw or in ``torch.save``'s zip format, it must
be refused with ``CheckpointCorruptError`` by ``verify_checkpoint`` and ``load``, skipped by
listing and restore, and the marker must never appear. Every unpickler entry point (and
``torch.load``) is also trapped, so a call would fail the test even if the payload were
defused some other way.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trainhooks


class Planted:
    """Unpickling this creates ``marker``: proof that something ran a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.marker,))


def payload(marker: Path, kind: str) -> bytes:
    if kind == "pickle":
        return pickle.dumps(Planted(marker))
    import torch

    buffer = io.BytesIO()
    torch.save({"weights": Planted(marker)}, buffer)
    return buffer.getvalue()


def state() -> dict[str, Any]:
    import torch

    return {"model": torch.nn.Linear(3, 2), "arr": np.arange(4.0), "meta": {"epoch": 1}}


@pytest.mark.parametrize("target", ["tensors.safetensors", "manifest.json"])
@pytest.mark.parametrize("kind", ["pickle", "torch_save"])
def test_a_planted_pickle_is_never_executed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, kind: str
) -> None:
    marker, selftest = tmp_path / "pwned", tmp_path / "selftest"
    planted = payload(marker, kind)
    pickle.loads(pickle.dumps(Planted(selftest)))
    assert selftest.is_dir(), "the payload must work for the test to mean anything"

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("trainhooks called an unpickler")

    import torch

    for module, name in ((pickle, "loads"), (pickle, "load"), (pickle, "Unpickler")):
        monkeypatch.setattr(module, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    directory = tmp_path / "ckpt"
    with trainhooks.Saver() as saver:
        saver.save(state(), directory, 1)
        saver.save(state(), directory, 2)
    (directory / "ckpt-000000000002" / target).write_bytes(planted)
    for reader in (trainhooks.verify_checkpoint, trainhooks.load):
        with pytest.raises(trainhooks.CheckpointCorruptError) as caught:
            reader(directory / "ckpt-000000000002")
        assert target in str(caught.value)
    assert [info.step for info in trainhooks.list_checkpoints(directory)] == [1]
    with warnings.catch_warnings(), trainhooks.Saver() as saver:
        warnings.simplefilter("ignore")
        assert saver.restore(state(), directory).step == 1
    assert not marker.exists(), "a pickle payload was executed"
