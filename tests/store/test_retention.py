"""Retention keeps what it should, deletes only what it made, and leftovers never count."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np

from _support.store import blank_state, hash_tree, save_steps, state_for
from trainhooks import Saver, latest_checkpoint, list_checkpoints, prune_checkpoints


def _steps(directory: Path) -> list[int]:
    return [info.step for info in list_checkpoints(directory)]


def test_max_to_keep_keeps_the_newest(tmp_path: Path) -> None:
    save_steps(tmp_path, [1, 2, 3, 4, 5, 6], max_to_keep=3)
    assert _steps(tmp_path) == [4, 5, 6]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".trainhooks.lock",
        "ckpt-000000000004",
        "ckpt-000000000005",
        "ckpt-000000000006",
    ]


def test_max_to_keep_none_keeps_everything(tmp_path: Path) -> None:
    save_steps(tmp_path, list(range(1, 9)), max_to_keep=None)
    assert _steps(tmp_path) == list(range(1, 9))


def test_retention_never_deletes_what_it_did_not_make(tmp_path: Path) -> None:
    foreign = tmp_path / "ckpt-foo"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    (tmp_path / "ckpt-000000000001.bak").mkdir()
    (tmp_path / "ckpt-000000000002.tmp-not-a-uuid").mkdir()
    (tmp_path / "README.txt").write_text("user file")
    other = tmp_path / "other-000000000001"
    other.mkdir()
    before = hash_tree(tmp_path)
    save_steps(tmp_path, [1, 2, 3, 4], max_to_keep=1)
    assert _steps(tmp_path) == [4]
    after = hash_tree(tmp_path)
    for path, digest in before.items():
        assert after.get(path) == digest, f"{path} was touched"
    for name in ("ckpt-foo", "ckpt-000000000001.bak", "ckpt-000000000002.tmp-not-a-uuid"):
        assert (tmp_path / name).is_dir(), name
    assert other.is_dir()


def test_other_basename_checkpoints_are_left_alone(tmp_path: Path) -> None:
    save_steps(tmp_path, [1, 2, 3], basename="best", max_to_keep=None)
    save_steps(tmp_path, [1, 2, 3], max_to_keep=1)
    assert _steps(tmp_path) == [3]
    assert [i.step for i in list_checkpoints(tmp_path, basename="best")] == [1, 2, 3]


def _leftovers(directory: Path) -> list[Path]:
    staging = directory / f"ckpt-000000000009.tmp-{uuid.uuid4().hex}"
    staging.mkdir()
    (staging / "tensors.safetensors").write_bytes(b"\0" * 100)
    deleting = directory / f"ckpt-000000000002.deleting-{uuid.uuid4().hex}"
    deleting.mkdir()
    (deleting / "manifest.json").write_text("{}")
    return [staging, deleting]


def test_leftovers_are_ignored_by_readers(tmp_path: Path) -> None:
    save_steps(tmp_path, [1], max_to_keep=None)
    _leftovers(tmp_path)
    assert _steps(tmp_path) == [1]
    assert latest_checkpoint(tmp_path).step == 1
    state = blank_state()
    assert Saver().restore(state, tmp_path).step == 1


def test_leftovers_are_cleaned_when_a_saver_starts_writing(tmp_path: Path) -> None:
    save_steps(tmp_path, [1], max_to_keep=None)
    leftovers = _leftovers(tmp_path)
    with Saver() as saver:
        saver.save({"w": np.zeros(2)}, tmp_path, step=3)
    for path in leftovers:
        assert not path.exists(), f"{path.name} was not cleaned"
    assert _steps(tmp_path) == [1, 3]


def test_a_valid_copy_under_a_deleting_name_is_not_listed(tmp_path: Path) -> None:
    (info,) = save_steps(tmp_path, [4])
    info.path.rename(tmp_path / f"ckpt-000000000004.deleting-{uuid.uuid4().hex}")
    assert list_checkpoints(tmp_path) == []
    assert latest_checkpoint(tmp_path) is None


def test_prune_checkpoints_dry_run_then_real(tmp_path: Path) -> None:
    save_steps(tmp_path, [1, 2, 3, 4], max_to_keep=None)
    would = prune_checkpoints(tmp_path, keep=2, dry_run=True)
    assert [i.step for i in would] == [1, 2]
    assert _steps(tmp_path) == [1, 2, 3, 4]
    removed = prune_checkpoints(tmp_path, keep=2)
    assert [i.step for i in removed] == [1, 2]
    assert _steps(tmp_path) == [3, 4]


class _Clock:
    """A wall clock the test moves by hand (the saver reads only ``time.time``)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def test_keep_every_n_hours_preserves_checkpoints_on_top(tmp_path, monkeypatch):
    clock = _Clock(1_000_000.0)
    monkeypatch.setattr(time, "time", clock.time)
    with Saver(max_to_keep=2, keep_checkpoint_every_n_hours=1.0) as saver:
        for step in range(1, 11):
            clock.now += 1000.0  # step s is saved at start + s * 1000 s
            info = saver.save(state_for(step), tmp_path, step=step)
            assert info.time == clock.now
    # TF's rule: from the saver's start, the first checkpoint falling out of the window
    # at least an hour later is kept for good (step 4 at +4000 s), then an hour after it
    # (step 8 at +8000 s); the last two are the max_to_keep window.
    assert _steps(tmp_path) == [4, 8, 9, 10]
