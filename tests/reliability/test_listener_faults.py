"""Misbehaving checkpoint listeners never cost a committed checkpoint or a clean directory.

Raising in ``before_save``: the exception reaches the caller with its own type, no
checkpoint exists for that step, nothing is left behind, and the directory lock is released
(a restart in the same process can save). Raising in ``after_save``: the checkpoint of that
step stays committed and verifies. Several listeners asking to stop: training stops once,
every listener still gets its ``after_save``, and no duplicate final save happens. The
first three hold in both saving modes (``async_save``: ``after_save`` runs, and raises, at
a later step boundary, and the saves after it never start).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import trainhooks
from _support.reliability import leftovers


class Boom(RuntimeError):
    """The listener's own error type, which must reach the caller unwrapped."""


class Recorder(trainhooks.CheckpointSaverListener):
    """Logs every call; raises in ``fail_in`` at ``fail_at``; asks to stop from ``stop_from``."""

    def __init__(
        self,
        name: str,
        log: list[str],
        fail_in: str | None = None,
        fail_at: int = -1,
        stop_from: int | None = None,
    ) -> None:
        self.name, self.log = name, log
        self.fail_in, self.fail_at, self.stop_from = fail_in, fail_at, stop_from

    def _maybe_fail(self, method: str, step: int) -> None:
        if method == self.fail_in and step == self.fail_at:
            raise Boom(f"{self.name}.{method} fails at step {step}")

    def begin(self) -> None:
        self.log.append(f"{self.name}.begin")

    def before_save(self, session: Any, global_step_value: int) -> None:
        self.log.append(f"{self.name}.before_save({global_step_value})")
        self._maybe_fail("before_save", global_step_value)

    def after_save(self, session: Any, global_step_value: int) -> bool:
        self.log.append(f"{self.name}.after_save({global_step_value})")
        self._maybe_fail("after_save", global_step_value)
        return self.stop_from is not None and global_step_value >= self.stop_from

    def end(self, session: Any, global_step_value: int) -> None:
        self.log.append(f"{self.name}.end({global_step_value})")


MODES = pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])


def train(
    directory: Path,
    listeners: list[Any],
    save_steps: int,
    last_step: int,
    async_save: bool = False,
) -> int:
    """A real session with a step-``save_steps`` saver hook; returns the steps run."""
    state = {"w": torch.zeros(16)}
    hook = trainhooks.CheckpointSaverHook(
        directory, save_steps=save_steps, listeners=listeners, async_save=async_save
    )
    runs = 0
    with trainhooks.MonitoredTrainingSession(
        checkpoint_dir=directory,
        state=state,
        hooks=[trainhooks.StopAtStepHook(last_step=last_step)],
        chief_only_hooks=[hook],
        save_checkpoint_secs=None,
        save_summaries_steps=None,
        log_step_count_steps=None,
    ) as session:
        while not session.should_stop():
            session.run(lambda: state["w"].add_(1.0))
            runs += 1
    return runs


def steps(directory: Path) -> list[int]:
    return [info.step for info in trainhooks.list_checkpoints(directory)]


@MODES
def test_raising_in_before_save_leaves_no_checkpoint_for_that_step(
    tmp_path: Path, async_save: bool
) -> None:
    directory, log = tmp_path / "ckpt", []
    with pytest.raises(Boom) as caught:
        train(directory, [Recorder("a", log, fail_in="before_save", fail_at=3)], 1, 10, async_save)
    (note,) = caught.value.__notes__
    assert "Recorder.before_save() at step 3" in note
    assert steps(directory) == [0, 1, 2]
    assert not leftovers(directory)
    assert "a.end(3)" not in log and not any(entry.startswith("a.end") for entry in log)
    with trainhooks.Saver() as saver:  # the session released the directory lock
        saver.save({"w": [0.0]}, directory, 3)


@MODES
def test_raising_in_after_save_keeps_that_checkpoint_committed(
    tmp_path: Path, async_save: bool
) -> None:
    directory, log = tmp_path / "ckpt", []
    with pytest.raises(Boom) as caught:
        train(directory, [Recorder("a", log, fail_in="after_save", fail_at=3)], 1, 10, async_save)
    (note,) = caught.value.__notes__
    assert "Recorder.after_save()" in note and "step 3" in note
    assert steps(directory) == [0, 1, 2, 3]
    for info in trainhooks.list_checkpoints(directory):
        trainhooks.verify_checkpoint(info.path)
    assert not leftovers(directory)
    restored = {"w": torch.zeros(16)}
    with trainhooks.Saver() as saver:
        assert saver.restore(restored, directory).step == 3
    assert torch.equal(restored["w"], torch.full((16,), 3.0))


@MODES
def test_a_listener_failing_on_the_final_save_fails_the_run(
    tmp_path: Path, async_save: bool
) -> None:
    """save_steps=4, stop at 6: the final save at 6 is in ``end``; its failure must surface."""
    directory, log = tmp_path / "ckpt", []
    with pytest.raises(Boom):
        train(directory, [Recorder("a", log, fail_in="before_save", fail_at=6)], 4, 6, async_save)
    assert steps(directory) == [0, 4]
    assert not any(entry.startswith("a.end") for entry in log)


def test_several_stop_requests_are_honoured_once_without_a_duplicate_final_save(
    tmp_path: Path,
) -> None:
    directory, log = tmp_path / "ckpt", []
    listeners = [
        Recorder("a", log, stop_from=4),
        Recorder("b", log),
        Recorder("c", log, stop_from=4),
    ]
    runs = train(directory, listeners, 2, 10)
    assert runs == 4
    assert steps(directory) == [0, 2, 4]
    for name in "abc":
        assert [e for e in log if e.startswith(name)] == [
            f"{name}.begin",
            f"{name}.before_save(0)",
            f"{name}.after_save(0)",
            f"{name}.before_save(2)",
            f"{name}.after_save(2)",
            f"{name}.before_save(4)",
            f"{name}.after_save(4)",
            f"{name}.end(4)",
        ]
    # every after_save(4) came before any end(4): all listeners were told before stopping
    assert log.index("c.after_save(4)") < log.index("a.end(4)")
