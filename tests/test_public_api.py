"""The public surface: one flat namespace whose ``__all__`` is exactly what resolves, and an
``import trainhooks`` that stays free of torch, JAX and TensorBoard."""

from __future__ import annotations

import subprocess
import sys

import trainhooks


def test_every_name_in_all_resolves_to_an_object_defined_in_a_private_module():
    for name in trainhooks.__all__:
        value = getattr(trainhooks, name)
        module = getattr(value, "__module__", "")
        assert module.startswith("trainhooks._"), (name, module)


def test_all_lists_exactly_the_public_table():
    assert sorted(trainhooks.__all__) == sorted(trainhooks._PUBLIC)
    assert "Saver" in dir(trainhooks)


def test_unknown_attribute_raises_attribute_error():
    try:
        trainhooks.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_importing_the_package_and_its_api_imports_no_framework():
    code = (
        "import sys, trainhooks\n"
        "for name in trainhooks.__all__: getattr(trainhooks, name)\n"
        "heavy = [m for m in ('torch', 'jax', 'tensorboard', 'sklearn') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_error_derives_from_one_root():
    for name in trainhooks.__all__:
        value = getattr(trainhooks, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, trainhooks.TrainhooksError), name
