"""Two writers on one directory, and readers restoring while a writer saves and deletes.

One writer per directory: a ``Saver`` of another process fails fast with
``CheckpointLockedError`` naming the holder, and succeeds once the first is gone; savers of
one process share the writer (one lock, one retention window) and are refused only when
they ask for another retention. A reader restoring the latest checkpoint in a loop while
a writer process saves with ``max_to_keep=2`` (so every save deletes one) never sees a
torn state, never a bare
``FileNotFoundError`` halfway through a load, and never fails once a checkpoint exists.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import trainhooks
from _support.reliability import COMMITTED_NAME, LONG, long_timeout, report_figure

WRITER_SCRIPT = """
import sys
import torch
import trainhooks

directory, last, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "hold"
state = {"a": torch.zeros(4096), "b": torch.zeros(64, 64, dtype=torch.float64),
         "c": {"n": 0, "v": torch.zeros(3, dtype=torch.int64)}}
with trainhooks.Saver(max_to_keep=2) as saver:
    for step in range(1, last + 1):
        for tensor in (state["a"], state["b"], state["c"]["v"]):
            tensor.fill_(step)
        state["c"]["n"] = step
        saver.save(state, directory, step)
    print("saved", flush=True)
    if hold:
        sys.stdin.readline()  # keep the lock until the parent says so
print("done", flush=True)
"""
READER_SAVES = 1500 if LONG else 150


def writer(directory: Path, last: int, hold: bool) -> subprocess.Popen[bytes]:
    mode = "hold" if hold else "run"
    return subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(directory), str(last), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def reader_state() -> dict[str, Any]:
    import torch

    return {
        "a": torch.full((4096,), -1.0),
        "b": torch.full((64, 64), -1.0, dtype=torch.float64),
        "c": {"n": -1, "v": torch.full((3,), -1, dtype=torch.int64)},
    }


def assert_untorn(state: dict[str, Any], step: int) -> None:
    """Every tensor and value of the restored state comes from the same step."""
    assert state["c"]["n"] == step
    for tensor in (state["a"], state["b"], state["c"]["v"]):
        assert bool((tensor == step).all()), f"torn restore: a tensor is not from step {step}"


def test_a_second_writer_process_fails_fast_naming_the_holder(tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    holder = writer(directory, 1, hold=True)
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline() == b"saved\n", "the holder could not save"
    with trainhooks.Saver() as saver:
        with pytest.raises(trainhooks.CheckpointLockedError) as caught:
            saver.save(reader_state(), directory, 2)
        assert f"pid {holder.pid}" in str(caught.value) and str(directory) in str(caught.value)
        assert [i.step for i in trainhooks.list_checkpoints(directory)] == [1]  # reads still work
        holder.stdin.write(b"release\n")
        holder.stdin.flush()
        _, stderr = holder.communicate(timeout=300)
        assert holder.returncode == 0, stderr.decode()[-3000:]
        saver.save(reader_state(), directory, 2)
    assert [i.step for i in trainhooks.list_checkpoints(directory)] == [1, 2]


def test_savers_of_one_process_share_the_directory_writer_and_its_retention(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "ckpt"
    first = trainhooks.Saver(max_to_keep=2)
    first.save({"x": [1]}, directory, 1)
    with trainhooks.Saver(max_to_keep=2) as second:
        second.save({"x": [2]}, directory, 2)
        first.save({"x": [3]}, directory, 3)  # one window: step 1 leaves it
        assert [i.step for i in trainhooks.list_checkpoints(directory)] == [2, 3]
        first.close()
        second.save({"x": [4]}, directory, 4)  # still the writer after the first closed
    assert [i.step for i in trainhooks.list_checkpoints(directory)] == [3, 4]
    with trainhooks.Saver() as third:  # the last close released the lock
        third.save({"x": [5]}, directory, 5)


def test_a_saver_of_the_same_process_with_other_retention_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    with trainhooks.Saver(max_to_keep=5) as first, trainhooks.Saver(max_to_keep=2) as second:
        first.save({"x": [1]}, directory, 1)
        with pytest.raises(ValueError, match=r"max_to_keep=5.*asks for.*max_to_keep=2"):
            second.save({"x": [2]}, directory, 2)
    assert [i.step for i in trainhooks.list_checkpoints(directory)] == [1]


def test_a_saver_dropped_without_close_lets_the_lock_go(tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    trainhooks.Saver().save({"x": [1]}, directory, 1)  # never closed; collected at once
    trainhooks.Saver().save({"x": [2]}, directory, 2)
    assert trainhooks.prune_checkpoints(directory, keep=1)  # would raise if still locked
    with trainhooks.Saver(max_to_keep=3) as saver:  # a new writer, with its own policy
        saver.save({"x": [3]}, directory, 3)


@long_timeout
def test_restoring_in_a_loop_while_a_writer_saves_and_deletes_never_fails(tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    process = writer(directory, READER_SAVES, hold=False)
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    steps_seen: set[int] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a "corrupt, falling back" warning would be a failure
        while process.poll() is None:
            outcome = restore_once(directory, steps_seen)
            outcomes[outcome.split(":")[0]] += 1
            if outcome.startswith("failure"):
                failures.append(outcome)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr.decode()[-3000:]
    outcomes["load"] = load_latest_loop(directory)
    report_figure(
        "concurrent_reader",
        writer_saves=READER_SAVES,
        restores=outcomes["restored"],
        before_first_checkpoint=outcomes["none_yet"],
        failures=len(failures),
        distinct_steps_restored=len(steps_seen),
    )
    kinds = sorted({re.sub(r"\d+", "N", f.replace(str(directory), "DIR")) for f in failures})
    assert not failures, "\n".join(kinds)
    assert outcomes["restored"] > 0


def restore_once(directory: Path, steps_seen: set[int]) -> str:
    state = reader_state()
    try:
        with trainhooks.Saver() as saver:
            info = saver.restore(state, directory)
    except trainhooks.CheckpointNotFoundError as exc:
        if steps_seen:
            return f"failure: no checkpoint reported after step {max(steps_seen)}: {exc}"
        return "none_yet"
    except Exception as exc:  # anything else, typed or not, is a failed restore
        return f"failure: {type(exc).__name__}: {exc}"
    assert_untorn(state, info.step)
    assert not steps_seen or info.step >= max(steps_seen) - 2, "restored a long-deleted step"
    steps_seen.add(info.step)
    return "restored"


def load_latest_loop(directory: Path) -> int:
    """After the writer: ``load`` of each listed checkpoint works (no race left)."""
    count = 0
    for info in trainhooks.list_checkpoints(directory):
        tree = trainhooks.load(info.path)
        assert tree["c"]["n"] == info.step
        count += 1
    return count


@long_timeout
def test_listing_while_a_writer_deletes_never_fails(tmp_path: Path) -> None:
    """``latest_checkpoint`` while retention removes old checkpoints: never an exception,
    never None once a checkpoint existed, never a step older than one seen before."""
    directory = tmp_path / "ckpt"
    process = writer(directory, READER_SAVES, hold=False)
    newest_seen, calls = -1, 0
    while process.poll() is None:
        try:
            latest = trainhooks.latest_checkpoint(directory)
        except Exception as exc:
            process.kill()
            pytest.fail(f"latest_checkpoint raised {type(exc).__name__}: {exc}")
        calls += 1
        if latest is None:
            assert newest_seen < 0, "latest_checkpoint said None after a checkpoint existed"
            continue
        assert latest.step >= newest_seen, f"latest went back from {newest_seen}"
        newest_seen = latest.step
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr.decode()[-3000:]
    report_figure("concurrent_listing", calls=calls, newest_seen=newest_seen)


@long_timeout
def test_load_of_a_checkpoint_deleted_under_it_is_a_typed_error(tmp_path: Path) -> None:
    """``load(path)`` of a checkpoint that retention removes meanwhile: success or a typed
    ``CheckpointError``, never a bare ``FileNotFoundError``."""
    directory = tmp_path / "ckpt"
    process = writer(directory, READER_SAVES, hold=False)
    kinds: Counter[str] = Counter()
    path = directory / "ckpt-000000000001"
    while process.poll() is None:
        try:
            tree = trainhooks.load(path)
        except trainhooks.CheckpointError as exc:
            kinds[type(exc).__name__] += 1
            path = _newest_name(directory, path)
            continue
        except OSError as exc:
            process.kill()
            pytest.fail(f"bare {type(exc).__name__} from load({path}): {exc}")
        assert tree["c"]["n"] == int(path.name.split("-")[-1])
        kinds["loaded"] += 1
        path = _newest_name(directory, path)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr.decode()[-3000:]
    report_figure("concurrent_load", **kinds)


def _newest_name(directory: Path, fallback: Path) -> Path:
    """The newest committed-looking name in ``directory`` (plain listing, no validation)."""
    try:
        names = sorted(n for n in os.listdir(directory) if COMMITTED_NAME.fullmatch(n))
    except FileNotFoundError:
        return fallback
    return directory / names[-1] if names else fallback
