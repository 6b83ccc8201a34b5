"""Saving a step that already has a checkpoint replaces it without the step ever missing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import trainhooks
from trainhooks._store import _commit


def _save(directory: Path, step: int, value: float) -> None:
    with trainhooks.Saver(max_to_keep=None) as saver:
        saver.save({"w": np.full(3, value)}, directory, step)


def test_resaving_a_step_replaces_it_atomically(tmp_path: Path) -> None:
    _save(tmp_path, 1, 1.0)
    _save(tmp_path, 1, 2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".trainhooks.lock", "ckpt-000000000001"]
    assert trainhooks.load(tmp_path / "ckpt-000000000001")["w"].tolist() == [2.0, 2.0, 2.0]


def test_without_an_atomic_exchange_a_failed_rename_puts_the_old_copy_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _save(tmp_path, 1, 1.0)
    monkeypatch.setattr(_commit, "exchange_paths", lambda a, b: False)
    real_rename = os.rename
    calls = []

    def failing_second_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # 1: old copy aside, 2: new copy into place
            raise OSError(5, "injected EIO", str(dst))
        real_rename(src, dst)

    monkeypatch.setattr(_commit.os, "rename", failing_second_rename)
    with pytest.raises(trainhooks.CheckpointWriteError):
        _save(tmp_path, 1, 2.0)
    monkeypatch.setattr(_commit.os, "rename", real_rename)
    assert [i.step for i in trainhooks.list_checkpoints(tmp_path)] == [1]
    assert trainhooks.load(tmp_path / "ckpt-000000000001")["w"].tolist() == [1.0, 1.0, 1.0]
