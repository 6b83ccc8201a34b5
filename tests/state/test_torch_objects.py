"""Torch training objects round-trip bit-exactly through Saver.save / Saver.restore.

A model, an Adam optimizer after real steps (integer-keyed state holding tensors), an LR
scheduler and a GradScaler are restored in place into freshly built objects; training then
continues identically, which is the property a resumed run needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from _support.trees import assert_same_tree, tensor_bits

torch = pytest.importorskip("torch")

from trainhooks import Saver  # noqa: E402


def _build(seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=2)
    return {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}


def _train(objects: dict[str, Any], steps: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    model, optimizer = objects["model"], objects["optimizer"]
    for _ in range(steps):
        inputs = torch.randn(4, 6, generator=generator)
        optimizer.zero_grad()
        loss = model(inputs).pow(2).mean()
        objects["scaler"].scale(loss).backward()
        objects["scaler"].step(optimizer)
        objects["scaler"].update()
        objects["scheduler"].step()


def _snapshot(objects: dict[str, Any]) -> dict[str, Any]:
    """Deep copies of every state_dict, so later training cannot alias them."""
    import copy

    return {name: copy.deepcopy(obj.state_dict()) for name, obj in objects.items()}


def test_model_optimizer_scheduler_scaler_restore_bit_exact(tmp_path: Path) -> None:
    trained = _build(seed=0)
    _train(trained, steps=3, seed=1)
    assert set(trained["optimizer"].state_dict()["state"]) == {0, 1, 2, 3}  # int keys
    expected = _snapshot(trained)
    with Saver() as saver:
        saver.save(trained, tmp_path, step=3)
        fresh = _build(seed=99)
        info = saver.restore(fresh, tmp_path)
    assert info.step == 3
    restored = _snapshot(fresh)
    for name in expected:
        assert_same_tree(restored[name], expected[name], name)


def test_restored_training_continues_identically(tmp_path: Path) -> None:
    trained = _build(seed=0)
    _train(trained, steps=3, seed=1)
    with Saver() as saver:
        saver.save(trained, tmp_path, step=3)
        resumed = _build(seed=42)
        saver.restore(resumed, tmp_path)
    _train(trained, steps=3, seed=7)
    _train(resumed, steps=3, seed=7)
    for (name, a), b in zip(
        trained["model"].named_parameters(), resumed["model"].parameters(), strict=True
    ):
        assert tensor_bits(a).tobytes() == tensor_bits(b).tobytes(), name
    assert trained["scheduler"].get_last_lr() == resumed["scheduler"].get_last_lr()
    assert trained["scaler"].get_scale() == resumed["scaler"].get_scale()


def test_restore_is_in_place_into_the_same_parameter_objects(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    saved = model.weight.detach().clone()
    state = {"model": model}
    with Saver() as saver:
        saver.save(state, tmp_path, step=1)
        weight_before = model.weight
        with torch.no_grad():
            model.weight.zero_()
        saver.restore(state, tmp_path)
    assert model.weight is weight_before
    assert state["model"] is model
    assert torch.equal(model.weight.detach(), saved)


def test_grad_scaler_state_round_trips_on_cpu(tmp_path: Path) -> None:
    try:
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
    except (RuntimeError, TypeError) as err:  # pragma: no cover - depends on the torch build
        pytest.skip(f"GradScaler is not constructible on CPU here: {err}")
    expected = scaler.state_dict()
    fresh = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=100)
    with Saver() as saver:
        saver.save({"scaler": scaler}, tmp_path, step=0)
        saver.restore({"scaler": fresh}, tmp_path)
    assert_same_tree(fresh.state_dict(), expected, "scaler")


def test_optimizer_param_groups_keep_tuples_and_none(tmp_path: Path) -> None:
    trained = _build(seed=0)
    _train(trained, steps=1, seed=1)
    fresh = _build(seed=5)
    with Saver() as saver:
        saver.save({"optimizer": trained["optimizer"]}, tmp_path, step=1)
        saver.restore({"optimizer": fresh["optimizer"]}, tmp_path)
    group = fresh["optimizer"].state_dict()["param_groups"][0]
    assert group["betas"] == (0.9, 0.999) and type(group["betas"]) is tuple
    assert group["foreach"] is None
    assert group["initial_lr"] == 0.01


def test_tied_weights_restore_into_the_shared_parameter(tmp_path: Path) -> None:
    torch.manual_seed(0)
    embed = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = embed.weight  # tied, as in language models
    model = torch.nn.ModuleDict({"embed": embed, "head": head})
    saved = embed.weight.detach().clone()
    with Saver() as saver:
        saver.save({"model": model}, tmp_path, step=1)
        with torch.no_grad():
            embed.weight.zero_()
        saver.restore({"model": model}, tmp_path)
    assert model["head"].weight is model["embed"].weight
    assert torch.equal(model["embed"].weight.detach(), saved)
