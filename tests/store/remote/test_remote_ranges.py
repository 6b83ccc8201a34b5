"""Reading part of a checkpoint from object storage downloads that part only: the manifest,
each data object's header, and the byte ranges of the tensors asked for, each verified
with its crc32c. Bytes are counted as they arrive from the (real, moto) server."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import trainhooks
from trainhooks import CheckpointCorruptError, Saver
from trainhooks._saver import load_outline
from trainhooks._store._remote import _objects

MIB = 1024 * 1024
HEADERS = 256 * 1024  # generous bound on a manifest plus a safetensors header


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The sizes of every range read answered by the server, in order."""
    sizes: list[int] = []
    read = _objects.FsspecObjects.read

    def counting(self: _objects.FsspecObjects, path: str, start: int, end: int) -> bytes:
        data = read(self, path, start, end)
        sizes.append(len(data))
        return data

    monkeypatch.setattr(_objects.FsspecObjects, "read", counting)
    yield sizes


def _state() -> dict[str, np.ndarray]:
    return {
        "model": np.arange(MIB, dtype=np.float32),  # 4 MiB
        "opt": np.full(2 * MIB, 7, dtype=np.float32),  # 8 MiB
    }


@pytest.fixture
def saved(s3_url: str) -> str:
    with Saver() as saver:
        saver.save(_state(), s3_url, 1)
    return f"{s3_url}/ckpt-000000000001"


def test_restoring_one_entry_downloads_only_its_tensor(saved: str, fetched: list[int]) -> None:
    target = {"model": np.zeros(MIB, np.float32)}
    fetched.clear()
    info = Saver().restore(target, saved.rpartition("/")[0], strict=False)
    assert info.step == 1
    np.testing.assert_array_equal(target["model"], _state()["model"])
    assert 4 * MIB <= sum(fetched) < 4 * MIB + HEADERS  # not the 8 MiB of "opt"


def test_show_downloads_no_tensor_and_one_tensor_with_tensor(
    saved: str, fetched: list[int]
) -> None:
    fetched.clear()
    tree, stand_ins = load_outline(saved)
    assert sum(fetched) < HEADERS
    assert tree["opt"].shape == (2 * MIB,) and tree["opt"].dtype == np.float32
    assert tree["opt"].nbytes == 8 * MIB and set(stand_ins.values()) == {"model", "opt"}
    fetched.clear()
    tree, _ = load_outline(saved, {"model"})
    np.testing.assert_array_equal(tree["model"], _state()["model"])
    assert 4 * MIB <= sum(fetched) < 4 * MIB + HEADERS


def test_each_range_is_verified_by_its_own_crc32c(saved: str, s3) -> None:  # type: ignore[no-untyped-def]
    """A flipped byte in "opt" fails "opt" alone: "model" restores from the same object."""
    data_object = next(p for p in s3.find(saved) if p.endswith(".safetensors"))
    body = bytearray(s3.cat_file(data_object))
    body[-5] ^= 0xFF  # inside "opt", the last tensor
    s3.pipe_file(data_object, bytes(body))
    target = {"model": np.zeros(MIB, np.float32)}
    with Saver() as saver:
        assert saver.restore(target, saved.rpartition("/")[0], step=1, strict=False).step == 1
        np.testing.assert_array_equal(target["model"], _state()["model"])
        with pytest.raises(CheckpointCorruptError, match=r"'opt'.*crc32c"):
            saver.restore(
                {"opt": np.zeros(2 * MIB, np.float32)},
                saved.rpartition("/")[0],
                step=1,
                strict=False,
            )
    with pytest.raises(CheckpointCorruptError, match="'opt'"):
        load_outline(saved, {"opt"})
    assert load_outline(saved)[0]["opt"].shape == (2 * MIB,)  # listing reads no tensor
    with pytest.raises(CheckpointCorruptError):
        trainhooks.verify_checkpoint(saved)
