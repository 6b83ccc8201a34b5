"""The public surface: one flat namespace that is a promise (an explicit list of names),
seen the same by type checkers and at run time, and an ``import trainhooks`` that stays
free of torch, JAX and TensorBoard."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import trainhooks

# The API as promised to users: adding or removing a name is a decision, made here.
EXPECTED_PUBLIC_NAMES = {
    # errors
    "TrainhooksError",
    "CheckpointError",
    "CheckpointCorruptError",
    "CheckpointWriteError",
    "CheckpointNotFoundError",
    "CheckpointLockedError",
    "CheckpointFormatError",
    "CheckpointTimeoutError",
    "StateMismatchError",
    "NanLossDuringTrainingError",
    "ResumeDivergenceError",
    "DistributedRecoveryError",
    "RollbackRequested",
    # preemption
    "Preempted",
    "EXIT_PREEMPTED",
    # checkpoint store
    "CheckpointInfo",
    "list_checkpoints",
    "latest_checkpoint",
    "verify_checkpoint",
    "checkpoint_info",
    "prune_checkpoints",
    "export_safetensors",
    "SaveFuture",
    # state and the saver
    "Saver",
    "load",
    "RNGState",
    # session and hook protocol
    "HookSession",
    "SessionRunHook",
    "SessionRunArgs",
    "SessionRunContext",
    "SessionRunValues",
    "SecondOrStepTimer",
    "MonitoredSession",
    "SingularMonitoredSession",
    "MonitoredTrainingSession",
    "StepContext",
    # hooks
    "CheckpointSaverHook",
    "SupportsSave",
    "StopAtStepHook",
    "ResumeCheckHook",
    "StepCounterHook",
    "LoggingTensorHook",
    "NanTensorHook",
    "SummarySaverHook",
    "SupportsAddScalar",
    "FinalOpsHook",
    "GlobalStepWaiterHook",
    "StepArgsHook",
    "FeedFnHook",
    "ProfilerHook",
    # listeners
    "CheckpointSaverListener",
    "EvaluationListener",
    "BestCheckpointExporter",
    "BestExport",
    "EarlyStoppingListener",
}


def _checker_view() -> dict[str, str]:
    """``{name: module}`` of the imports type checkers see under ``if TYPE_CHECKING:``."""
    tree = ast.parse(Path(trainhooks.__file__).read_text(encoding="utf-8"))
    blocks = [
        node
        for node in tree.body
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    ]
    assert len(blocks) == 1, "expected one `if TYPE_CHECKING:` block in trainhooks/__init__.py"
    view: dict[str, str] = {}
    for node in blocks[0].body:
        assert isinstance(node, ast.ImportFrom) and node.module is not None, ast.dump(node)
        for alias in node.names:
            # ``X as X`` is what marks a re-export for mypy (strict) and pyright
            assert alias.asname == alias.name, f"{alias.name} must be imported as itself"
            assert alias.name not in view, f"{alias.name} imported twice"
            view[alias.name] = node.module
    return view


def test_all_is_exactly_the_promised_list_of_names():
    assert len(trainhooks.__all__) == len(set(trainhooks.__all__))
    assert set(trainhooks.__all__) == EXPECTED_PUBLIC_NAMES
    assert "Saver" in dir(trainhooks)


def test_type_checkers_see_the_same_names_from_the_same_modules_as_the_runtime():
    assert _checker_view() == trainhooks._PUBLIC
    assert set(trainhooks._PUBLIC) == set(trainhooks.__all__)


def test_every_name_in_all_resolves_to_the_object_its_private_module_defines():
    for name in trainhooks.__all__:
        value = getattr(trainhooks, name)
        if not isinstance(value, int):  # constants (EXIT_PREEMPTED) carry no __module__
            module = getattr(value, "__module__", "")
            assert module.startswith("trainhooks._"), (name, module)
        assert value is getattr(importlib.import_module(trainhooks._PUBLIC[name]), name)


def test_package_ships_a_py_typed_marker():
    assert (Path(trainhooks.__file__).parent / "py.typed").is_file()


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


def test_importing_the_package_alone_loads_none_of_its_modules():
    code = (
        "import sys, trainhooks\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('trainhooks.'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_error_derives_from_one_root():
    for name in trainhooks.__all__:
        value = getattr(trainhooks, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, trainhooks.TrainhooksError), name
