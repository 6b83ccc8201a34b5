"""The public Saver and load(): what a checkpoint looks like, and torch stays optional."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trainhooks
from trainhooks import (
    CheckpointInfo,
    CheckpointNotFoundError,
    Saver,
    latest_checkpoint,
    list_checkpoints,
    verify_checkpoint,
)

# Makes `import torch` (and its submodules) fail, as on a machine without torch.
_BLOCK_TORCH = textwrap.dedent(
    """
    import sys

    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"torch is blocked in this test ({name})")
            return None

    sys.meta_path.insert(0, _NoTorch())
    """
)


def _run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TRAINHOOKS_FAULTS": ""},
        check=False,
    )


def test_save_returns_checkpoint_info_matching_the_directory(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "dir"  # created if missing
    state = {"w": np.ones((4, 4), np.float32), "b": np.zeros(3, np.int64), "lr": 0.1}
    with Saver() as saver:
        info = saver.save(state, directory, step=100)
    assert isinstance(info, CheckpointInfo)
    assert info.step == 100
    assert info.path == directory / "ckpt-000000000100"
    assert sorted(p.name for p in info.path.iterdir()) == ["manifest.json", "tensors.safetensors"]
    assert info.nbytes == sum(p.stat().st_size for p in info.path.iterdir())
    assert info.num_tensors == 2
    assert info.time > 0 and info.format_version >= 1
    assert list_checkpoints(directory) == [info]
    assert latest_checkpoint(directory) == info
    assert verify_checkpoint(info.path) == info


def test_manifest_is_plain_json(tmp_path: Path) -> None:
    with Saver() as saver:
        info = saver.save({"w": np.ones(3)}, tmp_path, step=1, metadata={"note": "hi"})
    manifest = json.loads((info.path / "manifest.json").read_text(encoding="utf-8"))
    assert isinstance(manifest, dict)
    assert "hi" in json.dumps(manifest)


def test_restore_without_any_checkpoint_raises_not_found(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError) as caught:
        Saver().restore({"w": np.zeros(2)}, tmp_path / "empty")
    assert "empty" in str(caught.value)
    assert latest_checkpoint(tmp_path / "empty") is None
    assert list_checkpoints(tmp_path / "empty") == []


def test_restore_of_missing_explicit_step_raises_not_found(tmp_path: Path) -> None:
    with Saver() as saver:
        saver.save({"w": np.zeros(2)}, tmp_path, step=1)
        with pytest.raises(CheckpointNotFoundError, match="2"):
            saver.restore({"w": np.zeros(2)}, tmp_path, step=2)


def test_restore_picks_the_newest_or_the_asked_step(tmp_path: Path) -> None:
    with Saver() as saver:
        for step in (1, 2, 3):
            saver.save({"w": np.full(2, step)}, tmp_path, step=step)
        state = {"w": np.zeros(2, np.int64)}
        assert saver.restore(state, tmp_path).step == 3
        assert state["w"].tolist() == [3, 3]
        assert saver.restore(state, tmp_path, step=2).step == 2
        assert state["w"].tolist() == [2, 2]


def test_verify_checkpoint_reports_progress_to_the_total(tmp_path: Path) -> None:
    with Saver() as saver:
        info = saver.save({"a": np.ones(1000), "b": np.ones(10)}, tmp_path, step=1)
    calls: list[tuple[int, int]] = []
    verify_checkpoint(info.path, progress=lambda done, total: calls.append((done, total)))
    assert calls, "progress was never called"
    assert calls[-1][0] == calls[-1][1] > 0
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_export_safetensors_writes_one_standalone_file(tmp_path: Path) -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    state = {"model": {"w": np.arange(6, dtype=np.float32)}, "step_count": 3}
    with Saver() as saver:
        info = saver.save(state, tmp_path / "ckpts", step=3)
    out = trainhooks.export_safetensors(info.path, tmp_path / "model.safetensors")
    tensors = safetensors_numpy.load_file(os.fspath(out))
    assert len(tensors) == 1
    np.testing.assert_array_equal(next(iter(tensors.values())), np.arange(6, dtype=np.float32))
    assert not [p for p in tmp_path.iterdir() if p.name not in {"ckpts", "model.safetensors"}]


def _describe(value: Any) -> Any:
    """A JSON description of a loaded tree: type, dtype, shape and the raw bytes of arrays."""
    if isinstance(value, np.ndarray):
        return ["array", value.dtype.name, list(value.shape), value.tobytes().hex()]
    if isinstance(value, dict):
        return ["dict", [[type(k).__name__, str(k), _describe(v)] for k, v in value.items()]]
    if isinstance(value, (list, tuple)):  # load() may return tuples as lists
        return ["list", [_describe(v) for v in value]]
    return [type(value).__name__, repr(value)]


_LOAD_IN_CHILD = _BLOCK_TORCH + textwrap.dedent(
    """
    import json, sys
    from typing import Any
    import numpy as np
    import trainhooks

    {describe}

    tree = trainhooks.load(sys.argv[1])
    assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
    print(json.dumps(_describe(tree)))
    """
)


def _bfloat16_or_uint16() -> np.dtype:
    """What load() gives bfloat16 as: ml_dtypes' bfloat16 when installed, else raw uint16."""
    try:
        import ml_dtypes
    except ImportError:
        return np.dtype(np.uint16)
    return np.dtype(ml_dtypes.bfloat16)


def test_load_needs_no_torch_and_returns_nested_numpy(tmp_path: Path) -> None:
    import inspect

    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(3, 2)
    state = {
        "model": model,
        "half": torch.arange(4, dtype=torch.bfloat16),
        "tree": {0: {"m": torch.ones(2, dtype=torch.float16)}, "lr": 0.5, "tag": None},
        "table": np.arange(3, dtype=np.uint32),
    }
    with Saver() as saver:
        info = saver.save(state, tmp_path, step=5)
    expected = {
        "model": {k: v.numpy() for k, v in model.state_dict().items()},
        "half": state["half"].view(torch.int16).numpy().view(_bfloat16_or_uint16()),
        "tree": {0: {"m": state["tree"][0]["m"].numpy()}, "lr": 0.5, "tag": None},
        "table": state["table"],
    }
    code = _LOAD_IN_CHILD.replace("{describe}", inspect.getsource(_describe))
    result = _run_python(code, os.fspath(info.path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(json.dumps(_describe(expected)))


def test_numpy_training_saves_and_restores_without_torch(tmp_path: Path) -> None:
    """The one "torch stays optional" check of a whole run: a session with the default
    hooks, checkpoints and a restore, in a process where ``import torch`` fails."""
    code = _BLOCK_TORCH + textwrap.dedent(
        """
        import sys
        import numpy as np
        import trainhooks as th

        state = {"w": np.zeros(5), "rng": th.RNGState(), "gen": np.random.default_rng(1)}
        with th.MonitoredTrainingSession(
            checkpoint_dir=sys.argv[1], state=state, save_checkpoint_steps=2,
            hooks=[th.StopAtStepHook(last_step=3)],
        ) as session:
            while not session.should_stop():
                session.run(lambda: state["w"].__iadd__(1.0))
        target = {"w": np.zeros(5), "rng": th.RNGState(), "gen": np.random.default_rng(2)}
        with th.Saver() as saver:
            info = saver.restore(target, sys.argv[1])
        assert info.step == 3 and target["w"].tolist() == [3.0] * 5
        assert target["gen"].random() == state["gen"].random()
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    result = _run_python(code, os.fspath(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_metadata_that_is_not_json_is_refused_before_writing(tmp_path: Path) -> None:
    from trainhooks import CheckpointFormatError

    with Saver() as saver:
        for metadata in ({"lr": np.float32(0.1)}, {"loss": float("nan")}, {"obj": object()}):
            with pytest.raises(CheckpointFormatError, match="metadata"):
                saver.save({"w": np.zeros(2)}, tmp_path, step=1, metadata=metadata)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != ".trainhooks.lock"]
    assert leftovers == [], "nothing may be written for refused metadata"


def test_a_saved_step_is_always_listable(tmp_path: Path) -> None:
    """Steps past 12 digits must either be refused or still be found afterwards."""
    with Saver() as saver:
        try:
            info = saver.save({"w": np.zeros(2)}, tmp_path, step=10**12)
        except ValueError:
            assert not [p for p in tmp_path.iterdir() if p.name.startswith("ckpt")]
            return
    assert latest_checkpoint(tmp_path) == info
    assert [i.step for i in list_checkpoints(tmp_path)] == [10**12]


def test_saved_metadata_comes_back_with_the_checkpoint_info(tmp_path: Path) -> None:
    with Saver() as saver:
        info = saver.save({"w": np.zeros(2)}, tmp_path, step=3, metadata={"lr": 0.1, "tag": "a"})
    assert info.metadata == {"lr": 0.1, "tag": "a"}
    listed = list_checkpoints(tmp_path)[-1]
    assert listed.metadata == {"lr": 0.1, "tag": "a"}
    assert listed == info  # metadata is not part of equality or the hash
    assert hash(listed) == hash(info)


def test_checkpoint_info_describes_one_checkpoint_without_listing_its_directory(
    tmp_path: Path,
) -> None:
    from trainhooks import CheckpointNotFoundError, checkpoint_info

    with Saver() as saver:
        info = saver.save({"w": np.zeros(2)}, tmp_path, step=4, metadata={"k": 1})
    assert checkpoint_info(info.path) == info
    assert checkpoint_info(info.path).metadata == {"k": 1}
    with pytest.raises(CheckpointNotFoundError):
        checkpoint_info(tmp_path / "ckpt-000000000005")
