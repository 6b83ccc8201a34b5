"""Every truncation and bit flip in every file of a checkpoint is detected and named.

Two checkpoints of a real torch state (steps 1 and 2) are committed; then each file of the
newest one (tensor bytes, safetensors header, manifest) is damaged in turn: a single bit
flipped at each chosen offset, or the file cut at each chosen length. For every damage:
``verify_checkpoint`` and ``load`` raise ``CheckpointCorruptError`` naming the file (and the
tensor, when the damage lies in a tensor's bytes), and a sample of damages also checks that
``Saver.restore`` warns and falls back to step 1 with step 1's exact values.

Default: every byte of the header and manifest (one random bit each), five bytes of each
tensor, the meaningful cut lengths. ``TRAINHOOKS_LONG=1``: every bit and every length.
"""

from __future__ import annotations

import json
import os
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trainhooks
from _support.reliability import LONG, long_timeout, report_figure

DATA, MANIFEST = "tensors.safetensors", "manifest.json"
FALLBACK_SAMPLE = 1 if LONG else 25  # check the restore fallback on every n-th case


def make_state(seed: int) -> dict[str, Any]:
    """A small state with several kinds of tensors, all values depending on ``seed``."""
    import torch

    torch.manual_seed(seed)
    return {
        "model": torch.nn.Linear(6, 4),
        "embedding": torch.randn(5, 3).to(torch.bfloat16),
        "counts": np.arange(7, dtype=np.int64) * seed,
        "empty": torch.zeros(0),
        "scalar": torch.tensor(float(seed)),
        "meta": {"lr": 0.1 * seed, "name": f"run{seed}"},
    }


def assert_same_state(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    import torch

    for key, value in expected["model"].state_dict().items():
        assert torch.equal(actual["model"].state_dict()[key], value), key
    for key in ("embedding", "empty", "scalar"):
        assert torch.equal(actual[key], expected[key]), key
    assert np.array_equal(actual["counts"], expected["counts"])
    assert actual["meta"] == expected["meta"]


@dataclass(frozen=True)
class Damage:
    """One corruption of one file: a flipped bit, or the file cut at ``offset`` bytes."""

    file: str
    kind: str  # "flip" | "cut"
    offset: int
    bit: int = 0
    tensor: str | None = None  # the tensor whose bytes the damage lies in (flips only)

    def apply(self, path: Path, original: bytes) -> None:
        if self.kind == "cut":
            data = original[: self.offset]
        else:
            data = bytearray(original)
            data[self.offset] ^= 1 << self.bit
        path.write_bytes(bytes(data))


@dataclass
class Layout:
    """Where things are in the pristine newest checkpoint."""

    files: dict[str, bytes]
    header_end: int
    tensors: list[tuple[str, int, int]]  # (name, begin, end) in the data file


def read_layout(checkpoint: Path) -> Layout:
    files = {name: (checkpoint / name).read_bytes() for name in (DATA, MANIFEST)}
    header_end = 8 + int.from_bytes(files[DATA][:8], "little")
    manifest = json.loads(files[MANIFEST])
    tensors = [
        (t["name"], t["offsets"][0], t["offsets"][1])
        for t in manifest["tensors"]
        if t["file"] == DATA
    ]
    return Layout(files, header_end, tensors)


def damages(layout: Layout, rng: random.Random) -> Iterator[Damage]:
    """The matrix: flips and cuts over every file of the checkpoint."""
    bits = range(8) if LONG else None
    for name, data in layout.files.items():
        owned = _owners(layout) if name == DATA else {}
        for offset in _flip_offsets(layout, name, len(data), rng):
            for bit in bits or (rng.randrange(8),):
                yield Damage(name, "flip", offset, bit, owned.get(offset))
        for length in _cut_lengths(layout, name, len(data), rng):
            yield Damage(name, "cut", length)


def _owners(layout: Layout) -> dict[int, str]:
    return {i: name for name, begin, end in layout.tensors for i in range(begin, end)}


def _flip_offsets(layout: Layout, name: str, size: int, rng: random.Random) -> list[int]:
    if LONG or name == MANIFEST:
        return list(range(size))
    offsets = list(range(layout.header_end))
    for _, begin, end in layout.tensors:
        if end > begin:
            picks = {begin, end - 1, (begin + end) // 2}
            picks |= {rng.randrange(begin, end) for _ in range(2)}
            offsets += sorted(picks)
    return offsets


def _cut_lengths(layout: Layout, name: str, size: int, rng: random.Random) -> list[int]:
    if LONG:
        return list(range(size))
    lengths = {0, 1, size // 2, size - 1} | {rng.randrange(size) for _ in range(16)}
    if name == DATA:
        lengths |= {7, 8, 9, layout.header_end - 1, layout.header_end}
        for _, begin, end in layout.tensors:
            lengths |= {begin + 1, end - 1, end}
    return sorted(n for n in lengths if 0 <= n < size)


@dataclass
class Score:
    total: int = 0
    detected: int = 0
    file_in_message: int = 0
    file_attribute: int = 0
    tensor_named: int = 0
    tensor_expected: int = 0
    fallbacks_checked: int = 0
    fallbacks_warned: int = 0
    misses: list[str] | None = None

    def miss(self, what: str) -> None:
        kind = what.split(" for ")[0]
        if sum(m.startswith(kind) for m in self.misses or []) < 3:  # a few of each kind
            self.misses = [*(self.misses or []), what]


@pytest.fixture
def two_checkpoints(tmp_path: Path) -> Path:
    directory = tmp_path / "ckpt"
    with trainhooks.Saver(max_to_keep=None) as saver:
        saver.save(make_state(1), directory, 1)
        saver.save(make_state(2), directory, 2)
    return directory


def check_damage(checkpoint: Path, damage: Damage, score: Score) -> None:
    """verify_checkpoint and load both refuse the damaged checkpoint, naming what is bad."""
    score.total += 1
    errors = []
    for reader in (trainhooks.verify_checkpoint, trainhooks.load):
        try:
            reader(checkpoint)
        except trainhooks.CheckpointCorruptError as exc:
            errors.append(exc)
    if len(errors) != 2:
        score.miss(f"undetected {damage}")
        return
    score.detected += 1
    err = errors[0]
    if damage.file in str(err):
        score.file_in_message += 1
    else:
        score.miss(f"message does not name the file for {damage}: {err}")
    if err.file == damage.file:
        score.file_attribute += 1
    else:
        score.miss(f"CheckpointCorruptError.file is {err.file!r} for {damage}")
    if damage.tensor is not None:
        score.tensor_expected += 1
        if err.tensor == damage.tensor and damage.tensor in str(err):
            score.tensor_named += 1
        else:
            score.miss(f"tensor not named for {damage}: tensor={err.tensor!r}")


def check_fallback(directory: Path, score: Score, damage: Damage | None = None) -> None:
    """Restore-latest restores step 1's exact values and warns that step 2 is corrupt."""
    state = make_state(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with trainhooks.Saver() as saver:
            info = saver.restore(state, directory)
    latest = trainhooks.latest_checkpoint(directory)
    assert latest is not None and latest.step in (1, 2)
    score.fallbacks_checked += 1
    if info.step != 1:
        score.miss(f"restore accepted the damaged step {info.step} for {damage}")
        return
    assert_same_state(state, make_state(1))
    if any("ckpt-000000000002" in str(w.message) for w in caught):
        score.fallbacks_warned += 1
    else:
        score.miss(f"silent fallback (no warning about step 2) for {damage}")


@long_timeout
def test_every_flip_and_cut_in_every_file_is_detected_and_named(two_checkpoints: Path) -> None:
    checkpoint = two_checkpoints / "ckpt-000000000002"
    layout = read_layout(checkpoint)
    score = Score()
    for number, damage in enumerate(damages(layout, random.Random(5))):
        path = checkpoint / damage.file
        damage.apply(path, layout.files[damage.file])
        try:
            check_damage(checkpoint, damage, score)
            if number % FALLBACK_SAMPLE == 0:
                check_fallback(two_checkpoints, score, damage)
        finally:
            path.write_bytes(layout.files[damage.file])
    trainhooks.verify_checkpoint(checkpoint)  # pristine again
    report_figure(
        "corruption_matrix",
        damages=score.total,
        detected=score.detected,
        file_named_in_message=score.file_in_message,
        file_attribute_set=score.file_attribute,
        tensor_named=score.tensor_named,
        tensor_expected=score.tensor_expected,
        fallbacks_checked=score.fallbacks_checked,
        fallbacks_warned=score.fallbacks_warned,
        long=LONG,
    )
    assert score.detected == score.total, score.misses
    assert score.file_in_message == score.total, score.misses
    assert score.file_attribute == score.total, score.misses
    assert score.tensor_named == score.tensor_expected, score.misses
    assert score.fallbacks_warned == score.fallbacks_checked, score.misses


@pytest.mark.parametrize(
    "breakage",
    ["remove_data", "remove_manifest", "data_is_symlink", "manifest_is_dir", "empty_manifest"],
)
def test_missing_or_replaced_files_fall_back_to_the_previous_checkpoint(
    two_checkpoints: Path, breakage: str
) -> None:
    checkpoint = two_checkpoints / "ckpt-000000000002"
    target = checkpoint / (DATA if "data" in breakage else MANIFEST)
    pristine = target.read_bytes()
    target.unlink()
    if breakage == "data_is_symlink":
        outside = two_checkpoints.parent / "elsewhere.safetensors"
        outside.write_bytes(pristine)
        os.symlink(outside, target)
    elif breakage == "manifest_is_dir":
        target.mkdir()
    elif breakage == "empty_manifest":
        target.write_bytes(b"")
    with pytest.raises(trainhooks.CheckpointCorruptError) as caught:
        trainhooks.verify_checkpoint(checkpoint)
    assert target.name in str(caught.value)
    score = Score()
    check_fallback(two_checkpoints, score)
    assert not score.misses, score.misses


def test_an_explicitly_requested_corrupt_step_raises_instead_of_falling_back(
    two_checkpoints: Path,
) -> None:
    data = two_checkpoints / "ckpt-000000000002" / DATA
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0x10
    data.write_bytes(bytes(raw))
    with trainhooks.Saver() as saver, pytest.raises(trainhooks.CheckpointCorruptError) as caught:
        saver.restore(make_state(0), two_checkpoints, step=2)
    assert caught.value.step == 2 and caught.value.tensor is not None


def test_restore_skips_every_corrupt_newer_checkpoint_down_to_a_valid_one(tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    with trainhooks.Saver(max_to_keep=None) as saver:
        for step in (1, 2, 3):
            saver.save(make_state(step), directory, step)
    (directory / "ckpt-000000000003" / MANIFEST).write_bytes(b"{}")
    data = directory / "ckpt-000000000002" / DATA
    data.write_bytes(data.read_bytes()[:-3])
    latest = trainhooks.latest_checkpoint(directory)
    assert latest is not None and latest.step == 1
    state = make_state(0)
    with pytest.warns(UserWarning), trainhooks.Saver() as saver:
        assert saver.restore(state, directory).step == 1
    assert_same_state(state, make_state(1))


def test_a_directory_of_only_corrupt_checkpoints_raises_a_typed_error(tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    with trainhooks.Saver(max_to_keep=None) as saver:
        for step in (1, 2):
            saver.save(make_state(step), directory, step)
    for step in (1, 2):
        data = directory / f"ckpt-{step:012d}" / DATA
        raw = bytearray(data.read_bytes())
        raw[-2] ^= 0x01
        data.write_bytes(bytes(raw))
    with (
        warnings.catch_warnings(),
        trainhooks.Saver() as saver,
        pytest.raises(trainhooks.CheckpointError) as caught,
    ):
        warnings.simplefilter("ignore")
        saver.restore(make_state(0), directory)
    assert str(directory) in str(caught.value)
