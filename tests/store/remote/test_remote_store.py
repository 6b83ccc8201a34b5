"""Saving, listing, restoring, verifying and pruning checkpoints through ``s3://`` URLs."""

from __future__ import annotations

import numpy as np
import pytest

import trainhooks
from trainhooks import (
    CheckpointCorruptError,
    CheckpointLockedError,
    Saver,
)


def _state(value: float) -> dict[str, object]:
    return {"w": np.full((64, 32), value, np.float32), "b": np.arange(7.0) + value, "n": 3}


def test_save_restore_list_verify_round_trip(s3_url: str, s3) -> None:  # type: ignore[no-untyped-def]
    with Saver(max_to_keep=None) as saver:
        for step in (10, 20):
            info = saver.save(_state(step), s3_url, step, metadata={"loss": 1.0 / step})
        assert str(info.path) == f"{s3_url}/ckpt-000000000020"
        assert info.path.name == "ckpt-000000000020"
        target = _state(0)
        restored = saver.restore(target, s3_url)
    assert restored.step == 20
    np.testing.assert_array_equal(target["w"], np.full((64, 32), 20, np.float32))
    assert [c.step for c in trainhooks.list_checkpoints(s3_url)] == [10, 20]
    latest = trainhooks.latest_checkpoint(s3_url)
    assert latest is not None and latest.metadata == {"loss": 0.05}
    assert trainhooks.verify_checkpoint(str(latest.path)).step == 20
    loaded = trainhooks.load(f"{s3_url}/ckpt-000000000010")
    np.testing.assert_array_equal(loaded["b"], np.arange(7.0) + 10)
    names = sorted(p.rsplit("/", 1)[1] for p in s3.find(s3_url))
    assert ".trainhooks.lease" not in names  # released when the saver closed
    assert names.count("manifest.json") == 2


def test_restore_explicit_step(s3_url: str) -> None:
    with Saver() as saver:
        saver.save(_state(1), s3_url, 1)
        saver.save(_state(2), s3_url, 2)
        target = _state(0)
        assert saver.restore(target, s3_url, step=1).step == 1
    assert target["n"] == 3 and float(target["b"][0]) == 1.0


def test_retention_deletes_manifest_then_data(s3_url: str, s3) -> None:  # type: ignore[no-untyped-def]
    with Saver(max_to_keep=2) as saver:
        for step in range(1, 5):
            saver.save(_state(step), s3_url, step)
    assert [c.step for c in trainhooks.list_checkpoints(s3_url)] == [3, 4]
    prefixes = {p.split("/")[2] for p in s3.find(s3_url)}
    assert prefixes == {"ckpt-000000000003", "ckpt-000000000004"}


def test_prune_and_dry_run(s3_url: str) -> None:
    with Saver(max_to_keep=None) as saver:
        for step in range(1, 5):
            saver.save(_state(step), s3_url, step)
    assert [c.step for c in trainhooks.prune_checkpoints(s3_url, 1, dry_run=True)] == [1, 2, 3]
    assert len(trainhooks.list_checkpoints(s3_url)) == 4
    assert [c.step for c in trainhooks.prune_checkpoints(s3_url, 2)] == [1, 2]
    assert [c.step for c in trainhooks.list_checkpoints(s3_url)] == [3, 4]


def test_second_writer_is_locked_out_until_the_first_closes(s3_url: str) -> None:
    first, second = Saver(), Saver()
    first.save(_state(1), s3_url, 1)
    with pytest.raises(CheckpointLockedError, match="another saver"):
        second.save(_state(2), s3_url, 2)
    first.close()
    second.save(_state(2), s3_url, 2)
    second.close()
    assert [c.step for c in trainhooks.list_checkpoints(s3_url)] == [1, 2]


def test_resaving_a_step_replaces_it(s3_url: str, s3) -> None:  # type: ignore[no-untyped-def]
    with Saver() as saver:
        saver.save(_state(1), s3_url, 5)
        saver.save(_state(2), s3_url, 5)
    assert float(trainhooks.load(f"{s3_url}/ckpt-000000000005")["b"][0]) == 2.0
    assert len(s3.find(f"{s3_url}/ckpt-000000000005")) == 2  # one manifest, one data object


def test_corrupt_newest_falls_back_with_a_warning(s3_url: str, s3) -> None:  # type: ignore[no-untyped-def]
    with Saver(max_to_keep=None) as saver:
        saver.save(_state(1), s3_url, 1)
        info = saver.save(_state(2), s3_url, 2)
    data = next(p for p in s3.find(str(info.path)) if p.endswith(".safetensors"))
    blob = bytearray(s3.cat_file(data))
    blob[-3] ^= 0xFF  # a flipped bit inside the last tensor; size and header unchanged
    s3.pipe_file(data, bytes(blob))
    with pytest.raises(CheckpointCorruptError, match="crc32c"):
        trainhooks.verify_checkpoint(str(info.path))
    target = _state(0)
    with pytest.warns(UserWarning, match="restored step 1"):
        assert Saver().restore(target, s3_url).step == 1
    assert float(target["b"][0]) == 1.0


def test_prefix_without_manifest_is_not_listed_and_is_cleaned(s3_url: str, s3) -> None:  # type: ignore[no-untyped-def]
    with Saver() as saver:
        saver.save(_state(1), s3_url, 1)
    leftover = f"{s3_url}/ckpt-000000000002/tensors-{'a' * 32}.safetensors"
    s3.pipe_file(leftover, b"half an upload")
    assert [c.step for c in trainhooks.list_checkpoints(s3_url)] == [1]
    with Saver() as saver:
        saver.save(_state(3), s3_url, 3)
    assert not s3.exists(leftover)


def test_large_tensor_goes_up_in_parallel_parts(s3_url: str) -> None:
    big = {"x": np.arange(40 * 1024 * 1024 // 4, dtype=np.float32)}  # 40 MiB: 3 parts
    with Saver() as saver:
        saver.save(big, s3_url, 1)
        target = {"x": np.zeros_like(big["x"])}
        saver.restore(target, s3_url)
    np.testing.assert_array_equal(target["x"], big["x"])


def test_file_urls_are_local_paths(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"file://{tmp_path}/run"
    with Saver() as saver:
        saver.save(_state(1), url, 1)
    assert (tmp_path / "run" / "ckpt-000000000001" / "manifest.json").is_file()
    assert [c.step for c in trainhooks.list_checkpoints(url)] == [1]


def test_a_save_past_a_format_limit_uploads_nothing(s3_url: str, s3) -> None:  # type: ignore[no-untyped-def]
    """The same admission as a local save: refused before any byte goes up, so a save that
    returns can always be read back."""
    from trainhooks._store._limits import MAX_MANIFEST_BYTES, MAX_NAME_LENGTH

    with Saver() as saver:
        saver.save(_state(1), s3_url, 1)
        before = sorted(s3.find(s3_url))
        for state, metadata in (
            ({"a" * (MAX_NAME_LENGTH + 1): np.zeros(1)}, None),
            (_state(2), {"pad": "x" * MAX_MANIFEST_BYTES}),
            (_state(2), {1: "mixed", "key": "types"}),
        ):
            with pytest.raises(trainhooks.CheckpointFormatError):
                saver.save(state, s3_url, 2, metadata=metadata)
        assert sorted(s3.find(s3_url)) == before
    assert [c.step for c in trainhooks.list_checkpoints(s3_url)] == [1]


def test_a_manifest_claiming_another_step_is_corrupt(s3_url: str, s3) -> None:  # type: ignore[no-untyped-def]
    """As locally: a prefix named for one step whose manifest says another (re-sealed, as
    a forger who knows the format would) is refused, not listed under the wrong step."""
    import json

    import crc32c

    with Saver(max_to_keep=None) as saver:
        saver.save(_state(1), s3_url, 1)
        info = saver.save(_state(2), s3_url, 2)
    path = f"{info.path}/manifest.json"
    body = json.loads(s3.cat_file(path))
    body["step"] = 7
    body.pop("manifest_crc32c")

    def canonical(value: object) -> bytes:
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()

    body["manifest_crc32c"] = crc32c.crc32c(canonical(body))
    s3.pipe_file(path, canonical(body))
    assert [c.step for c in trainhooks.list_checkpoints(s3_url)] == [1]
    with pytest.raises(CheckpointCorruptError, match="says step 7"):
        trainhooks.verify_checkpoint(str(info.path))
    latest = trainhooks.latest_checkpoint(s3_url)
    assert latest is not None and latest.step == 1
