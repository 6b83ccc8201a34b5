"""JAX state keeps its types: optax states restore as the namedtuples optax expects and
training continues bit for bit; equinox modules and registered pytree nodes are rebuilt
from the target; typed PRNG keys round-trip; arrays land on the target's device or
sharding."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from trainhooks import RNGState, Saver, StateMismatchError, list_checkpoints, load

OPTIMIZERS: dict[str, Callable[[], optax.GradientTransformation]] = {
    "adam": lambda: optax.adam(1e-2),
    "adamw": lambda: optax.adamw(1e-2, weight_decay=1e-3),
    "chain_clip_adamw": lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2)),
    "inject_hyperparams": lambda: optax.inject_hyperparams(optax.adamw)(learning_rate=1e-2),
}


def _params(seed: int) -> dict[str, jax.Array]:
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"w": jax.random.normal(k1, (3, 2)), "b": jax.random.normal(k2, (2,))}


def _step_fn(optimizer: optax.GradientTransformation) -> Callable[..., Any]:
    def loss(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        return jnp.mean(jnp.tanh(x @ params["w"] + params["b"]) ** 2)

    @jax.jit
    def step(state: dict[str, Any]) -> dict[str, Any]:
        key, sub = jax.random.split(state["key"])
        grads = jax.grad(loss)(state["params"], jax.random.normal(sub, (8, 3)))
        updates, opt = optimizer.update(grads, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt": opt, "key": key}

    return step


def _bits(tree: Any) -> list[bytes]:
    leaves = jax.tree_util.tree_leaves(tree)
    return [np.asarray(jax.random.key_data(x) if _is_key(x) else x).tobytes() for x in leaves]


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optax_training_resumes_bit_identically_from_a_fresh_template(name, tmp_path) -> None:
    optimizer = OPTIMIZERS[name]()
    step = _step_fn(optimizer)
    params = _params(0)
    state = {"params": params, "opt": optimizer.init(params), "key": jax.random.key(42)}
    for _ in range(3):
        state = step(state)
    with Saver() as saver:
        saver.save(state, tmp_path, step=3)
    for _ in range(3):
        state = step(state)

    fresh = _params(1)  # another start: restore must overwrite every leaf
    resumed = {"params": fresh, "opt": optimizer.init(fresh), "key": jax.random.key(0)}
    Saver().restore(resumed, tmp_path)
    assert jax.tree_util.tree_structure(resumed) == jax.tree_util.tree_structure(state)
    for _ in range(3):
        resumed = step(resumed)  # optimizer.update accepts the restored state
    assert _bits(resumed) == _bits(state)


def test_restored_optax_state_has_optax_types_and_attributes(tmp_path: Path) -> None:
    optimizer = optax.adamw(1e-3)
    params = _params(0)
    opt = optimizer.update(params, optimizer.init(params), params)[1]
    with Saver() as saver:
        saver.save({"opt": opt}, tmp_path, step=1)
    state = {"opt": optimizer.init(params)}
    Saver().restore(state, tmp_path)
    adam_state = state["opt"][0]
    assert type(adam_state) is type(opt[0])
    assert int(adam_state.count) == 1 and isinstance(adam_state.mu["w"], jax.Array)
    assert np.asarray(adam_state.nu["b"]).tobytes() == np.asarray(opt[0].nu["b"]).tobytes()


def test_an_equinox_module_is_rebuilt_with_the_targets_static_parts(tmp_path: Path) -> None:
    model = eqx.nn.MLP(2, 3, 4, 1, activation=jax.nn.relu, key=jax.random.key(1))
    path = _save({"model": model}, tmp_path)
    target = eqx.nn.MLP(2, 3, 4, 1, activation=jax.nn.relu, key=jax.random.key(2))
    state = {"model": target}
    Saver().restore(state, tmp_path)
    restored = state["model"]
    assert type(restored) is eqx.nn.MLP and restored.activation is jax.nn.relu
    assert eqx.tree_equal(restored, model)
    x = jnp.ones(2)
    assert np.asarray(restored(x)).tobytes() == np.asarray(model(x)).tobytes()
    loaded = load(path)["model"]  # no target: a dict of children, callables as None
    assert loaded["activation"] is None
    assert type(loaded["layers"][0]["weight"]) is np.ndarray


def test_a_registered_dataclass_node_takes_its_meta_fields_from_the_target(tmp_path) -> None:
    @dataclasses.dataclass
    class Layer:
        weight: jax.Array
        name: str

    jax.tree_util.register_dataclass(Layer, data_fields=["weight"], meta_fields=["name"])
    _save({"layer": Layer(jnp.arange(3.0), "saved")}, tmp_path)
    state = {"layer": Layer(jnp.zeros(3), "target")}
    Saver().restore(state, tmp_path)
    assert state["layer"].name == "target" and state["layer"].weight.tolist() == [0, 1, 2]


class FrozenMap(Mapping[str, Any]):
    """An immutable mapping registered as a pytree node (like flax's FrozenDict)."""

    def __init__(self, items: dict[str, Any]) -> None:
        self._items = dict(items)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


jax.tree_util.register_pytree_with_keys(
    FrozenMap,
    lambda m: ([(jax.tree_util.DictKey(k), v) for k, v in m.items()], tuple(m)),
    lambda keys, values: FrozenMap(dict(zip(keys, values, strict=True))),
)


def test_an_immutable_mapping_node_is_rebuilt_as_its_own_type(tmp_path: Path) -> None:
    _save({"params": FrozenMap({"w": jnp.ones(2), "b": jnp.zeros(1)})}, tmp_path)
    state = {"params": FrozenMap({"w": jnp.zeros(2), "b": jnp.ones(1)})}
    Saver().restore(state, tmp_path)
    assert type(state["params"]) is FrozenMap
    assert state["params"]["w"].tolist() == [1.0, 1.0] and state["params"]["b"].tolist() == [0]


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_typed_keys_round_trip_with_and_without_a_target(impl: str, tmp_path: Path) -> None:
    key = jax.random.split(jax.random.key(7, impl=impl))[1]
    path = _save({"key": key, "legacy": jax.random.PRNGKey(3)}, tmp_path)
    state = {"key": jax.random.key(0, impl=impl), "legacy": jax.random.PRNGKey(0)}
    Saver().restore(state, tmp_path)
    fresh: dict[str, Any] = {"key": None, "legacy": None}
    Saver().restore(fresh, tmp_path)
    for restored in (state, fresh):
        assert _is_key(restored["key"]) and str(jax.random.key_impl(restored["key"])) == impl
        assert jax.random.uniform(restored["key"]) == jax.random.uniform(key)
        assert restored["legacy"].tolist() == jax.random.PRNGKey(3).tolist()
    loaded = load(path)["key"]  # no framework: the impl name and the key data
    assert loaded["impl"] == impl and type(loaded["data"]) is np.ndarray


def test_a_key_of_another_impl_is_refused_before_anything_changes(tmp_path: Path) -> None:
    _save({"w": jnp.ones(2), "key": jax.random.key(1, impl="rbg")}, tmp_path)
    state = {"w": jnp.zeros(2), "key": jax.random.key(1)}
    before = dict(state)
    with pytest.raises(StateMismatchError, match=r"rbg key, the target is a threefry2x32"):
        Saver().restore(state, tmp_path)
    assert all(state[name] is before[name] for name in before)


def test_rng_state_warns_when_jax_draws_differently_on_resume(tmp_path: Path) -> None:
    _save({"rng": RNGState()}, tmp_path)
    flag = "jax_threefry_partitionable"
    saved = jax.config.jax_threefry_partitionable
    jax.config.update(flag, not saved)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Saver().restore({"rng": RNGState()}, tmp_path)
    finally:
        jax.config.update(flag, saved)
    assert any(flag in str(w.message) for w in caught)


def test_arrays_and_keys_land_on_the_targets_device_or_sharding(tmp_path: Path) -> None:
    """Two CPU devices (XLA's host device count, set before JAX starts, so in a child)."""
    code = textwrap.dedent(
        """
        import sys
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec
        from trainhooks import Saver

        second = jax.devices()[1]
        sharded = NamedSharding(Mesh(np.array(jax.devices()), ("x",)), PartitionSpec("x"))
        def state(v, k):
            return {
                "free": jnp.full(4, v),
                "second": jax.device_put(jnp.full(4, v), second),
                "sharded": jax.device_put(jnp.full(4, v), sharded),
                "key": jax.device_put(jax.random.key(k), second),
            }
        with Saver() as saver:
            saver.save(state(1.0, 1), sys.argv[1], step=1)
        target = state(0.0, 0)
        Saver().restore(target, sys.argv[1])
        assert not target["free"].committed
        assert target["second"].devices() == {second} and target["second"].committed
        assert target["sharded"].sharding == sharded
        assert target["key"].devices() == {second}
        assert [float(target[k][0]) for k in ("free", "second", "sharded")] == [1.0] * 3
        print("ok")
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result = subprocess.run(
        [sys.executable, "-c", code, os.fspath(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def _save(state: dict[str, Any], directory: Path) -> Path:
    with Saver() as saver:
        return saver.save(state, directory, step=1).path


def test_load_of_an_optax_state_gives_plain_tuples_and_numpy(tmp_path: Path) -> None:
    optimizer = optax.adam(1e-3)
    _save({"opt": optimizer.init(_params(0))}, tmp_path)
    loaded = load(list_checkpoints(tmp_path)[-1].path)["opt"]
    assert type(loaded) is tuple and type(loaded[0]) is tuple and loaded[1] == ()
    assert type(loaded[0][1]["w"]) is np.ndarray
