"""A full disk, a failing fsync, a read-only or vanished directory: typed errors, nothing lost.

For each fault: the error reaching the caller is a ``CheckpointError`` naming the directory
and the step (``CheckpointWriteError`` with the errno where the OS gave one), committed
checkpoints stay byte-identical, no staging directory is left, retention does not run, and
the next save succeeds once the fault is gone. A training run whose final save fails does
not end "successfully".

How each fault is made without mocks: ``RLIMIT_FSIZE`` in a child (EFBIG, the disk-full
path); the store's ``fsync``/named fault points raising EIO; a ``0555`` directory written by
a child that lost ``CAP_DAC_OVERRIDE`` (tests run as root in CI, and root ignores file
modes; dropping the capability from the bounding set before ``exec`` makes the mode bind);
the directory deleted between saves or inside a save. The disk-full path and the session
paths run in both saving modes: a background save (``save_async``, ``async_save=True``)
fails the same way, its error raised by its future or at the next step boundary.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import trainhooks
from _support.reliability import committed_digests, leftovers
from _support.session import DurableSaver, RecordingListener
from trainhooks._store import _commit, _faults

PRE_COMMIT_POINTS = ("after_data_file", "before_manifest", "before_dir_fsync", "before_rename")
POST_COMMIT_POINTS = ("after_rename", "before_parent_fsync")
RETENTION_POINTS = ("retention_after_mark", "retention_before_remove")

CHILD_SAVE_SCRIPT = """
import json, resource, sys
import torch
import trainhooks

directory, background = sys.argv[1], sys.argv[2] == "async"
state = {"big": torch.ones(524288), "note": {"n": 3}}  # 2 MiB of float32
saver = trainhooks.Saver(max_to_keep=2)

def save():
    if background:
        return saver.save_async(state, directory, 3).result()
    return saver.save(state, directory, 3)

def attempt():
    try:
        return {"ok": True, "step": save().step}
    except trainhooks.CheckpointError as exc:
        kind = type(exc).__name__
        return {"ok": False, "type": kind, "errno": getattr(exc, "errno", None),
                "step": exc.step, "message": str(exc)}
    except OSError as exc:  # untyped: the test reports it
        return {"ok": False, "type": type(exc).__name__, "errno": exc.errno,
                "step": None, "message": str(exc)}

print(json.dumps(attempt()), flush=True)
sys.stdin.readline()  # the parent removes the fault, then says go
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
print(json.dumps(attempt()), flush=True)
saver.close()
"""


def small_state(step: int) -> dict[str, Any]:
    import torch

    return {"w": torch.full((64,), float(step)), "step": {"n": step}}


@pytest.fixture
def pristine(tmp_path: Path) -> Path:
    """A directory with steps 1 and 2 committed and no writer holding it."""
    directory = tmp_path / "pristine"
    with trainhooks.Saver(max_to_keep=2) as saver:
        saver.save(small_state(1), directory, 1)
        saver.save(small_state(2), directory, 2)
    return directory


def steps(directory: Path) -> list[int]:
    return [info.step for info in trainhooks.list_checkpoints(directory)]


def assert_harmless(directory: Path, before: dict[str, str], expected_steps: list[int]) -> None:
    """Older checkpoints byte-identical, no staging left, retention not run, nothing new."""
    after = committed_digests(directory)
    assert {k: after.get(k) for k in before} == before, "a committed file changed"
    assert not any(".tmp-" in name for name in leftovers(directory)), leftovers(directory)
    assert steps(directory) == expected_steps


def assert_names_cause(exc: trainhooks.CheckpointError, directory: Path, step: int) -> None:
    assert exc.step == step and f"step {step}" in str(exc), str(exc)
    assert str(directory) in str(exc), str(exc)


def run_child_save(
    directory: Path, preexec: Callable[[], None], fix: Callable[[], None], mode: str = "sync"
) -> Any:
    """The child tries to save step 3, reports, waits for ``fix()``, then tries again."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_SAVE_SCRIPT, str(directory), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=preexec,
    )
    assert child.stdout is not None and child.stdin is not None
    first_line = child.stdout.readline()
    if not first_line:
        pytest.fail(f"child died: {child.communicate(timeout=60)[1].decode()[-3000:]}")
    first = json.loads(first_line)
    try:
        fix()
    finally:
        child.stdin.write(b"go\n")
        child.stdin.close()
    second_line = child.stdout.readline()
    assert child.stderr is not None
    errors = child.stderr.read().decode(errors="replace")
    child.wait(timeout=300)
    child.stdout.close()
    child.stderr.close()
    assert second_line, f"child died after the first attempt: {errors[-3000:]}"
    return first, json.loads(second_line)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_efbig_from_rlimit_fsize_is_a_write_error_and_the_next_save_succeeds(
    pristine: Path, mode: str
) -> None:
    before = committed_digests(pristine)

    def limit_file_size() -> None:  # in the child, before exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))

    def check_then_lift() -> None:
        assert_harmless(pristine, before, [1, 2])

    first, second = run_child_save(pristine, limit_file_size, check_then_lift, mode)
    assert first["type"] == "CheckpointWriteError", first
    assert first["errno"] == errno.EFBIG and first["step"] == 3, first
    assert str(pristine) in first["message"] and "step 3" in first["message"]
    assert second == {"ok": True, "step": 3}
    assert steps(pristine) == [2, 3]  # retention ran only after the successful save
    trainhooks.verify_checkpoint(pristine / "ckpt-000000000003")


def _drop_dac_capabilities() -> None:
    """In the child: lose the capabilities that let root ignore file modes (bounding set)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, dac_override, dac_read_search, fowner = 24, 1, 2, 3
    for capability in (dac_override, dac_read_search, fowner):
        if libc.prctl(pr_capbset_drop, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _can_drop_capabilities() -> bool:
    if os.geteuid() != 0:
        return True
    probe = subprocess.run(
        [sys.executable, "-c", "pass"], preexec_fn=_drop_dac_capabilities, check=False
    )
    return probe.returncode == 0


def test_a_read_only_directory_is_a_write_error_and_the_next_save_succeeds(
    pristine: Path,
) -> None:
    if not _can_drop_capabilities():
        pytest.skip("running as root without CAP_SETPCAP: a 0555 directory cannot bind root")
    before = committed_digests(pristine)
    pristine.chmod(0o555)

    def check_then_make_writable() -> None:
        assert_harmless(pristine, before, [1, 2])
        pristine.chmod(0o755)

    try:
        first, second = run_child_save(pristine, _drop_dac_capabilities, check_then_make_writable)
    finally:
        pristine.chmod(0o755)
    assert first["type"] == "CheckpointWriteError", first
    assert first["errno"] in (errno.EACCES, errno.EPERM, errno.EROFS), first
    assert str(pristine) in first["message"] and "step 3" in first["message"], first
    assert second == {"ok": True, "step": 3}
    assert steps(pristine) == [2, 3]


def _fresh_copy(pristine: Path, tmp_path: Path, name: str) -> Path:
    directory = tmp_path / name
    shutil.copytree(pristine, directory, symlinks=True)
    return directory


def test_eio_at_every_fsync_of_a_save_is_a_typed_error_and_harmless(
    pristine: Path, tmp_path: Path
) -> None:
    """``fsync=eio@N`` for N = 1, 2, ... until a save needs fewer fsyncs than N."""
    before = committed_digests(pristine)
    failed = 0
    for hit in range(1, 30):
        directory = _fresh_copy(pristine, tmp_path, f"fsync-{hit}")
        with trainhooks.Saver(max_to_keep=2) as saver:
            _faults.configure(f"fsync=eio@{hit}")
            try:
                saver.save(small_state(3), directory, 3)
            except trainhooks.CheckpointWriteError as exc:
                failed += 1
                assert exc.errno == errno.EIO
                _check_after_failed_save(directory, before, exc)
            else:
                break
            finally:
                _faults.configure(None)
            saver.save(small_state(4), directory, 4)  # the fault is gone: the next save works
        assert steps(directory)[-1] == 4
        with trainhooks.Saver(max_to_keep=2) as saver:  # the next start sweeps leftovers
            saver.save(small_state(5), directory, 5)
        assert not leftovers(directory)
    assert failed >= 4, "a save fsyncs at least: data file, manifest, staging dir, parent dir"


def _check_after_failed_save(
    directory: Path, before: dict[str, str], exc: trainhooks.CheckpointWriteError
) -> None:
    """Before the commit point nothing new exists; after it the new step is whole (an error
    from retention names the step it failed to delete)."""
    if 3 in steps(directory):
        assert exc.step in (1, 3) and str(directory) in str(exc), str(exc)
        trainhooks.verify_checkpoint(directory / "ckpt-000000000003")
        after = committed_digests(directory)
        assert all(after.get(k, v) == v for k, v in before.items()), "a committed file changed"
        assert not any(".tmp-" in name for name in leftovers(directory))
    else:
        assert_names_cause(exc, directory, 3)
        assert_harmless(directory, before, [1, 2])


@pytest.mark.parametrize("point", PRE_COMMIT_POINTS + POST_COMMIT_POINTS + RETENTION_POINTS)
def test_eio_at_each_fault_point_is_a_typed_error_and_harmless(
    pristine: Path, tmp_path: Path, point: str
) -> None:
    directory = _fresh_copy(pristine, tmp_path, "ckpt")
    before = committed_digests(directory)
    with trainhooks.Saver(max_to_keep=2) as saver:
        _faults.configure(f"{point}=eio")
        with pytest.raises(trainhooks.CheckpointWriteError) as caught:
            saver.save(small_state(3), directory, 3)
        _faults.configure(None)
        assert caught.value.errno == errno.EIO
        if point in PRE_COMMIT_POINTS:
            assert_names_cause(caught.value, directory, 3)
            assert_harmless(directory, before, [1, 2])
        elif point in POST_COMMIT_POINTS:
            assert_names_cause(caught.value, directory, 3)
            assert steps(directory) == [1, 2, 3], "retention must not run after a failed save"
            trainhooks.verify_checkpoint(directory / "ckpt-000000000003")
        else:  # the commit is durable; retention of step 1 failed half-way
            assert steps(directory) == [2, 3]
            trainhooks.verify_checkpoint(directory / "ckpt-000000000003")
        saver.save(small_state(4), directory, 4)
    assert steps(directory)[-1] == 4
    with trainhooks.Saver(max_to_keep=2) as saver:  # the next start sweeps every leftover
        saver.save(small_state(5), directory, 5)
    assert not leftovers(directory)
    for info in trainhooks.list_checkpoints(directory):
        trainhooks.verify_checkpoint(info.path)


def test_directory_removed_between_saves_is_a_typed_error_then_recreated(tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    with trainhooks.Saver(max_to_keep=2) as saver:
        saver.save(small_state(1), directory, 1)
        shutil.rmtree(directory)
        with pytest.raises(trainhooks.CheckpointWriteError) as caught:
            saver.save(small_state(2), directory, 2)
        assert_names_cause(caught.value, directory, 2)
        saver.save(small_state(3), directory, 3)
    assert steps(directory) == [3]


def test_directory_removed_inside_a_save_is_a_typed_error_then_recreated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "ckpt"
    real_fault_point = _commit.fault_point

    def remove_directory_before_rename(name: str) -> None:
        if name == "before_rename":
            shutil.rmtree(directory)
        real_fault_point(name)

    with trainhooks.Saver(max_to_keep=2) as saver:
        saver.save(small_state(1), directory, 1)
        monkeypatch.setattr(_commit, "fault_point", remove_directory_before_rename)
        with pytest.raises(trainhooks.CheckpointError) as caught:
            saver.save(small_state(2), directory, 2)
        monkeypatch.undo()
        assert_names_cause(caught.value, directory, 2)
        info = _save_within_two_attempts(saver, directory, 3)
    assert info.step == 3 and steps(directory) == [3]


def _save_within_two_attempts(saver: Any, directory: Path, step: int) -> Any:
    """The saver may report the vanished directory once more, then must save again."""
    try:
        return saver.save(small_state(step), directory, step)
    except trainhooks.CheckpointWriteError:
        return saver.save(small_state(step), directory, step)


def _run_session_to(
    directory: Path, last_step: int, on_last: Callable[[], None], async_save: bool = False
) -> None:
    """Train to ``last_step``, saving only at creation and at the end; ``on_last`` runs
    before the end (in async mode once the save at creation is durable)."""
    state = small_state(0)
    saver = DurableSaver()
    hook = trainhooks.CheckpointSaverHook(
        directory, save_steps=100, saver=saver if async_save else None, async_save=async_save
    )
    with (
        saver,
        trainhooks.MonitoredTrainingSession(
            checkpoint_dir=directory,
            state=state,
            hooks=[trainhooks.StopAtStepHook(last_step=last_step)],
            chief_only_hooks=[hook],
            save_summaries_steps=None,
            log_step_count_steps=None,
        ) as session,
    ):
        while not session.should_stop():
            session.run(lambda: state["w"].add_(1.0))
        saver.wait_durable()
        on_last()


MODES = pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])


@MODES
def test_a_run_whose_final_save_fails_does_not_end_successfully(
    tmp_path: Path, async_save: bool
) -> None:
    directory = tmp_path / "ckpt"
    with pytest.raises(trainhooks.CheckpointWriteError) as caught:
        _run_session_to(directory, 5, lambda: _faults.configure("before_rename=eio"), async_save)
    assert caught.value.step == 5
    assert steps(directory) == [0]
    assert not leftovers(directory)


@MODES
def test_a_run_whose_directory_vanishes_does_not_end_successfully(
    tmp_path: Path, async_save: bool
) -> None:
    directory = tmp_path / "ckpt"
    with pytest.raises(trainhooks.CheckpointError):
        _run_session_to(directory, 5, lambda: shutil.rmtree(directory), async_save)
    assert not directory.exists() or steps(directory) == []


def test_a_failed_background_write_raises_typed_at_the_next_step_boundary(tmp_path: Path) -> None:
    """The save of step 2 fails in the background (EIO before its rename); each step first
    waits for durability, so the error comes at the boundary of step 3: typed, naming step
    2, with no after_save(2), no final save and no end(); step 0 stays, nothing is left."""
    directory, log = tmp_path / "ckpt", []
    saver = DurableSaver(max_to_keep=2)
    hook = trainhooks.CheckpointSaverHook(
        directory,
        save_steps=2,
        saver=saver,
        listeners=[RecordingListener("a", log)],
        async_save=True,
    )
    state = small_state(0)

    def step() -> None:
        saver.wait_durable()
        state["w"].add_(1.0)

    _faults.configure("before_rename=eio@2")  # hit 1: the save at creation; hit 2: step 2
    with saver, pytest.raises(trainhooks.CheckpointWriteError) as caught:  # noqa: SIM117
        with trainhooks.MonitoredSession(
            hooks=[hook, trainhooks.StopAtStepHook(last_step=10)], state=state
        ) as session:
            while not session.should_stop():
                session.run(step)
    assert session.global_step == 3
    assert caught.value.step == 2 and caught.value.errno == errno.EIO
    assert log == ["a.begin", "a.before_save(0)", "a.after_save(0)", "a.before_save(2)"]
    assert steps(directory) == [0] and not leftovers(directory)
