"""A truncated or bit-flipped newest checkpoint is detected, named, and skipped on resume.

Every case starts from two good checkpoints (steps 1 and 2) and damages step 2 only. The
store must raise CheckpointCorruptError naming the file (and the tensor where there is one),
restore(step=None) must warn and fall back to step 1, and latest_checkpoint must never say
"none" while step 1 is valid.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from _support.store import (
    DATA,
    MANIFEST,
    blank_state,
    flip_bit,
    read_header,
    save_steps,
    step_of,
    tensor_byte_range,
)
from trainhooks import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointNotFoundError,
    Saver,
    latest_checkpoint,
    list_checkpoints,
    load,
    verify_checkpoint,
)


def _truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: keep if keep >= 0 else len(data) + keep])


def _damages() -> dict[str, Callable[[Path], None]]:
    def flip_in_tensor(name: str) -> Callable[[Path], None]:
        def damage(ckpt: Path) -> None:
            begin, end = tensor_byte_range(ckpt / DATA, name)
            flip_bit(ckpt / DATA, (begin + end) // 2, 3)

        return damage

    def flip_header_text(ckpt: Path) -> None:
        length, _ = read_header(ckpt / DATA)
        flip_bit(ckpt / DATA, 8 + length // 2, 1)

    return {
        "data_truncated_to_zero": lambda c: _truncate(c / DATA, 0),
        "data_truncated_in_header": lambda c: _truncate(c / DATA, 20),
        "data_truncated_by_one_byte": lambda c: _truncate(c / DATA, -1),
        "data_flip_in_weight": flip_in_tensor("weight"),
        "data_flip_in_half": flip_in_tensor("extra/half"),
        "header_length_prefix_flip": lambda c: flip_bit(c / DATA, 0, 4),
        "header_text_flip": flip_header_text,
        "manifest_flip": lambda c: flip_bit(c / MANIFEST, 40, 2),
        "manifest_truncated": lambda c: _truncate(c / MANIFEST, -7),
        "manifest_missing": lambda c: (c / MANIFEST).unlink(),
        "data_missing": lambda c: (c / DATA).unlink(),
        "data_file_extended": lambda c: (c / DATA).write_bytes((c / DATA).read_bytes() + b"\0"),
    }


DAMAGE_NAMES = [
    "data_truncated_to_zero",
    "data_truncated_in_header",
    "data_truncated_by_one_byte",
    "data_flip_in_weight",
    "data_flip_in_half",
    "header_length_prefix_flip",
    "header_text_flip",
    "manifest_flip",
    "manifest_truncated",
    "manifest_missing",
    "data_missing",
    "data_file_extended",
]


@pytest.fixture
def two_checkpoints(tmp_path: Path) -> tuple[Path, Path]:
    first, second = save_steps(tmp_path, [1, 2])
    return first.path, second.path


@pytest.mark.parametrize("damage", DAMAGE_NAMES)
def test_damaged_checkpoint_fails_verification_naming_the_file(damage, two_checkpoints):
    _, bad = two_checkpoints
    _damages()[damage](bad)
    with pytest.raises(CheckpointCorruptError) as caught:
        verify_checkpoint(bad)
    assert caught.value.step in (2, None)
    assert str(bad) in str(caught.value)
    expected_file = MANIFEST if damage.startswith("manifest") else DATA
    assert expected_file in str(caught.value) or caught.value.file == expected_file


@pytest.mark.parametrize("damage", DAMAGE_NAMES)
def test_damaged_checkpoint_is_refused_when_asked_for_by_step(damage, two_checkpoints) -> None:
    _, bad = two_checkpoints
    _damages()[damage](bad)
    state = blank_state()
    with pytest.raises(CheckpointCorruptError):
        Saver().restore(state, bad.parent, step=2)
    assert state["extra"]["count"] == -1, "a refused restore wrote into the state"
    with pytest.raises(CheckpointCorruptError):
        load(bad)


@pytest.mark.parametrize("damage", DAMAGE_NAMES)
def test_damaged_newest_is_skipped_with_a_warning(damage, two_checkpoints) -> None:
    good, bad = two_checkpoints
    _damages()[damage](bad)
    directory = bad.parent
    latest = latest_checkpoint(directory)
    assert latest is not None and latest.step in (1, 2)
    assert 1 in [info.step for info in list_checkpoints(directory)]
    state = blank_state()
    with pytest.warns(Warning, match=r"ckpt-000000000002|step 2"):
        info = Saver().restore(state, directory)
    assert info.step == 1 and info.path == good
    assert step_of(state) == 1


@pytest.mark.parametrize("tensor", ["weight", "bias", "extra/half"])
def test_flipped_data_bit_names_file_tensor_and_range(tensor, two_checkpoints):
    _, bad = two_checkpoints
    begin, end = tensor_byte_range(bad / DATA, tensor)
    flip_bit(bad / DATA, end - 1, 7)
    with pytest.raises(CheckpointCorruptError) as caught:
        verify_checkpoint(bad)
    err = caught.value
    assert err.file == DATA
    assert err.tensor == tensor
    assert err.byte_range == (begin, end)
    assert err.step == 2
    assert tensor in str(err) and DATA in str(err)


def test_every_single_bit_flip_in_the_data_file_is_caught(two_checkpoints):
    """Exhaustive over the header (one random bit per byte) and sampled over the data."""
    _, bad = two_checkpoints
    path = bad / DATA
    original = path.read_bytes()
    length, _ = read_header(path)
    rng = random.Random(0)
    offsets = list(range(8 + length)) + rng.sample(range(8 + length, len(original)), 40)
    missed = []
    for offset in offsets:
        flip_bit(path, offset, rng.randrange(8))
        try:
            verify_checkpoint(bad)
            missed.append(offset)
        except CheckpointCorruptError:
            pass
        path.write_bytes(original)
    assert not missed, f"flips at byte offsets {missed} of {DATA} went unnoticed"


def test_every_single_bit_flip_in_the_manifest_is_caught(two_checkpoints):
    _, bad = two_checkpoints
    path = bad / MANIFEST
    original = path.read_bytes()
    rng = random.Random(1)
    missed, misnamed = [], []
    for offset in range(len(original)):
        bit = rng.randrange(8)
        flip_bit(path, offset, bit)
        try:
            verify_checkpoint(bad)
            missed.append((offset, bit))
        except CheckpointCorruptError:
            pass
        except CheckpointError as exc:  # e.g. a flipped version digit read as "newer format"
            misnamed.append((offset, bit, type(exc).__name__, str(exc)[-80:]))
        path.write_bytes(original)
    assert not missed, f"flips (offset, bit) {missed} of {MANIFEST} went unnoticed"
    assert not misnamed, f"flips reported as something other than corruption: {misnamed}"


def test_latest_is_never_none_while_a_valid_checkpoint_exists(tmp_path: Path):
    infos = save_steps(tmp_path, [1, 2, 3], max_to_keep=None)
    for info in infos[1:]:
        _truncate(info.path / DATA, 10)
    (infos[2].path / MANIFEST).write_bytes(b"garbage")
    latest = latest_checkpoint(tmp_path)
    assert latest is not None and latest.step == 1
    with pytest.warns(Warning):
        assert Saver().restore(blank_state(), tmp_path).step == 1


@pytest.mark.filterwarnings("ignore")
def test_all_checkpoints_corrupt_is_an_error_not_silence(tmp_path: Path) -> None:
    (info,) = save_steps(tmp_path, [1])
    begin, _ = tensor_byte_range(info.path / DATA, "weight")
    flip_bit(info.path / DATA, begin, 0)
    state = blank_state()
    with pytest.raises((CheckpointCorruptError, CheckpointNotFoundError)) as caught:
        Saver().restore(state, tmp_path)  # a warning may come first; the error must follow
    assert "ckpt-000000000001" in str(caught.value) or str(tmp_path) in str(caught.value)
    assert state["extra"]["count"] == -1, "nothing may be restored from a corrupt checkpoint"


def test_flip_deep_inside_a_multi_chunk_tensor_is_caught(tmp_path: Path) -> None:
    """A tensor larger than the read and write chunks: every chunk counts in its checksum."""
    big = np.arange(5 * 1024 * 1024, dtype=np.float32)  # 20 MiB: several chunks each way
    with Saver() as saver:
        info = saver.save({"big": big}, tmp_path, step=1)
    begin, end = tensor_byte_range(info.path / DATA, "big")
    flip_bit(info.path / DATA, begin + (end - begin) * 3 // 4, 5)
    with pytest.raises(CheckpointCorruptError) as caught:
        verify_checkpoint(info.path)
    assert caught.value.tensor == "big"
    with pytest.raises(CheckpointCorruptError):
        Saver().restore({"big": np.zeros_like(big)}, tmp_path, step=1)


@pytest.mark.parametrize("cut", [1, 300])
def test_truncated_data_names_the_first_tensor_cut_off(cut, two_checkpoints):
    _, bad = two_checkpoints
    path = bad / DATA
    size = path.stat().st_size
    _, header = read_header(path)
    names = [n for n in header if n != "__metadata__"]
    ranges = {n: tensor_byte_range(path, n) for n in names}
    first_cut = min((n for n in names if ranges[n][1] > size - cut), key=lambda n: ranges[n][0])
    _truncate(path, -cut)
    with pytest.raises(CheckpointCorruptError) as caught:
        verify_checkpoint(bad)
    assert caught.value.file == DATA
    assert caught.value.tensor == first_cut, str(caught.value)
