"""Each framework's adapter: JAX arrays round-trip, tensors restore across frameworks, and a
process that imported no framework restores a torch/JAX checkpoint as NumPy without
importing either."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from trainhooks import Saver, StateMismatchError, list_checkpoints, load

JAX_DTYPES = [jnp.float32, jnp.bfloat16, jnp.int32, jnp.uint8, jnp.bool_, jnp.float16]


def _save(state: dict, directory: Path) -> None:
    with Saver() as saver:
        saver.save(state, directory, step=1)


@pytest.mark.parametrize("dtype", JAX_DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_jax_array_of_each_dtype_round_trips_into_a_new_jax_array(dtype, tmp_path) -> None:
    source = (jnp.arange(12) % 3).reshape(3, 4).astype(dtype)
    _save({"w": source}, tmp_path)
    template = jnp.zeros((3, 4), dtype)
    state = {"w": template}
    Saver().restore(state, tmp_path)
    restored = state["w"]
    assert isinstance(restored, jax.Array) and restored is not template
    assert restored.dtype == source.dtype and restored.shape == source.shape
    assert np.asarray(restored).tobytes() == np.asarray(source).tobytes()


def test_jax_dtype_mismatch_is_refused_unless_cast(tmp_path: Path) -> None:
    _save({"w": jnp.arange(4, dtype=jnp.float32)}, tmp_path)
    with pytest.raises(StateMismatchError, match="cast=True"):
        Saver().restore({"w": jnp.zeros(4, jnp.bfloat16)}, tmp_path)
    state = {"w": jnp.zeros(4, jnp.bfloat16)}
    Saver().restore(state, tmp_path, cast=True)
    assert state["w"].dtype == jnp.bfloat16
    assert state["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_jax_shape_mismatch_is_refused(tmp_path: Path) -> None:
    _save({"w": jnp.ones((2, 3))}, tmp_path)
    with pytest.raises(StateMismatchError, match=r"\[2, 3\]"):
        Saver().restore({"w": jnp.zeros((3, 2))}, tmp_path)


def test_a_saved_tensor_restores_into_another_frameworks_array(tmp_path: Path) -> None:
    _save({"t": torch.arange(4.0), "n": np.arange(4.0), "j": jnp.arange(4.0)}, tmp_path)
    state = {"t": np.zeros(4, np.float32), "n": torch.zeros(4, dtype=torch.float64)}
    state["j"] = torch.zeros(4)
    filled = dict(state)
    Saver().restore(state, tmp_path)
    for key, target in filled.items():
        assert state[key] is target, f"{key} must be filled in place"
        assert np.asarray(state[key]).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_without_any_framework_imported_a_checkpoint_restores_as_numpy(tmp_path: Path) -> None:
    _save(
        {"t": torch.arange(3.0), "j": jnp.arange(3, dtype=jnp.int32), "g": torch.Generator()},
        tmp_path,
    )
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from trainhooks import Saver, load, list_checkpoints

        state = {"t": None, "j": np.zeros(3, np.int32), "g": None}
        Saver().restore(state, sys.argv[1])
        plain = load(list_checkpoints(sys.argv[1])[-1].path)
        assert type(state["t"]) is np.ndarray and state["t"].tolist() == [0.0, 1.0, 2.0]
        assert state["j"].tolist() == [0, 1, 2] and type(plain["j"]) is np.ndarray
        assert type(state["g"]) is np.ndarray  # a generator's state, with no torch to hold it
        print(sorted(m for m in ("torch", "jax", "jaxlib") if m in sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, os.fspath(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_load_gives_numpy_even_for_jax_arrays(tmp_path: Path) -> None:
    _save({"j": jnp.arange(3.0)}, tmp_path)
    loaded = load(list_checkpoints(tmp_path)[-1].path)
    assert type(loaded["j"]) is np.ndarray
