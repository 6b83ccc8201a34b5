"""``ResumeCheckHook`` in one process: wiring, tolerance, the journal's bounds and failures.

A crash is stood in for by copying the checkpoint directory while a run is still going
(the copy is what a SIGKILL at that moment would leave); tests/reliability/
test_resume_check.py does the same with real SIGKILLs and real torch training.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trainhooks
from trainhooks import CheckpointSaverHook, MonitoredTrainingSession, ResumeCheckHook
from trainhooks._hooks._resume_check import KEEP_WINDOWS
from trainhooks._store._journal import JOURNAL_NAME, read_journal

QUIET = {"save_summaries_steps": None, "log_step_count_steps": None, "save_checkpoint_secs": None}


def train(
    directory: Path,
    last_step: int,
    *,
    save_steps: int = 5,
    scale: float = 1.0,
    snapshot: tuple[int, Path] | None = None,
    **session_args: Any,
) -> dict[str, Any]:
    """Train a tiny array model to ``last_step``; ``snapshot=(step, path)`` copies the
    directory after ``step`` as a SIGKILL there would leave it. ``scale`` stands for
    state the run forgets: a resumed run with another scale trains differently."""
    state = {"w": np.zeros(3)}

    def step(n: int) -> dict[str, float]:
        state["w"] += scale * np.array([1.0, 0.5, 0.25]) / n
        return {"loss": float(state["w"].sum()), "n": n}

    with MonitoredTrainingSession(
        checkpoint_dir=directory,
        state=state,
        hooks=[trainhooks.StopAtStepHook(last_step=last_step)],
        save_checkpoint_steps=save_steps,
        **{**QUIET, **session_args},
    ) as session:
        while not session.should_stop():
            session.run(step, session.global_step + 1)
            if snapshot is not None and session.global_step == snapshot[0]:
                shutil.copytree(directory, snapshot[1])
    return state


def crashed_copy(tmp_path: Path, *, at: int = 14, save_steps: int = 5) -> Path:
    """A directory as a run killed right after step ``at`` leaves it."""
    copy = tmp_path / "crashed"
    train(tmp_path / "run", at + 3, save_steps=save_steps, snapshot=(at, copy))
    return copy


def resume_check_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("resume check")]


def test_training_session_installs_a_check_that_follows_its_saver(tmp_path: Path) -> None:
    with MonitoredTrainingSession(checkpoint_dir=tmp_path, save_checkpoint_steps=5, **QUIET) as s:
        [check] = [h for h in s._hooks if isinstance(h, ResumeCheckHook)]
        [saver] = [h for h in s._hooks if isinstance(h, CheckpointSaverHook)]
        assert check.saver_hook is saver
        assert s._hooks.index(check) == s._hooks.index(saver) + 1


def test_resume_check_false_or_no_saving_installs_no_check(tmp_path: Path) -> None:
    with MonitoredTrainingSession(
        checkpoint_dir=tmp_path / "a", save_checkpoint_steps=5, resume_check=False, **QUIET
    ) as s:
        assert not any(isinstance(h, ResumeCheckHook) for h in s._hooks)
    with MonitoredTrainingSession(checkpoint_dir=tmp_path / "b", **QUIET) as s:
        assert not any(isinstance(h, ResumeCheckHook) for h in s._hooks)


def test_the_check_follows_a_saver_hook_the_user_gave(tmp_path: Path) -> None:
    saver = CheckpointSaverHook(tmp_path, save_steps=3)
    check = ResumeCheckHook(rtol=1e-3)
    with MonitoredTrainingSession(
        checkpoint_dir=tmp_path, chief_only_hooks=[saver], resume_check=check, **QUIET
    ) as s:
        assert [h for h in s._hooks if isinstance(h, ResumeCheckHook)] == [check]
        assert check.saver_hook is saver


def test_a_faithful_resume_is_checked_and_silent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = crashed_copy(tmp_path)
    with caplog.at_level(logging.INFO, logger="trainhooks"):
        train(copy, 20)
    [record] = resume_check_records(caplog)
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith("resume check: 4 re-run step(s) after checkpoint 10")


def test_a_resume_that_trains_differently_warns_once_naming_step_and_values(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = crashed_copy(tmp_path)
    recorded = read_journal(copy)[10][11]["loss"]
    with caplog.at_level(logging.WARNING, logger="trainhooks"):
        train(copy, 20, scale=1.01)
    [record] = resume_check_records(caplog)
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert "step 11, re-run after restoring checkpoint 10" in message
    assert f"returned {recorded!r} at this step" in message
    assert "'loss' = " in message and "resume_check=False" in message


def test_a_fallback_to_an_older_checkpoint_compares_the_steps_of_later_windows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = crashed_copy(tmp_path, at=14, save_steps=1)
    for step in (12, 13, 14):  # as if the newest checkpoints were unreadable
        shutil.rmtree(copy / f"ckpt-{step:012d}")
    with caplog.at_level(logging.INFO, logger="trainhooks"):
        train(copy, 16, save_steps=1)
    [record] = resume_check_records(caplog)
    assert record.getMessage().startswith("resume check: 3 re-run step(s) after checkpoint 11")


def test_a_raised_divergence_keeps_the_crashed_run_s_record_for_the_fixed_rerun(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = crashed_copy(tmp_path)
    before = read_journal(copy)[10]
    with pytest.raises(trainhooks.ResumeDivergenceError) as caught:
        train(copy, 20, scale=2.0, resume_check=ResumeCheckHook(on_divergence="raise"))
    assert (caught.value.step, caught.value.name) == (11, "loss")
    assert read_journal(copy)[10] == before
    with caplog.at_level(logging.INFO, logger="trainhooks"):
        train(copy, 20)
    [record] = resume_check_records(caplog)
    assert record.getMessage().startswith("resume check: 4 re-run step(s) after checkpoint 10")


def test_differences_within_rtol_are_accepted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = crashed_copy(tmp_path)
    shutil.copytree(copy, tmp_path / "loose")
    with caplog.at_level(logging.WARNING, logger="trainhooks"):
        train(copy, 20, scale=1 + 1e-9)  # far below the default rtol of 1e-6
        train(tmp_path / "loose", 20, scale=1.0001, resume_check=ResumeCheckHook(rtol=1e-3))
    assert resume_check_records(caplog) == []


def test_journal_stays_bounded_over_many_saves(tmp_path: Path) -> None:
    sizes = []
    for last_step in (16, 40, 64):  # 32 saves: each opens a window and drops the oldest
        train(tmp_path, last_step, save_steps=2, resume_check=ResumeCheckHook(steps=4))
        sizes.append((tmp_path / JOURNAL_NAME).stat().st_size)
        windows = read_journal(tmp_path)
        assert len(windows) <= KEEP_WINDOWS
        assert all(len(steps) <= 4 for steps in windows.values())
        # only the newest checkpoints' windows are kept
        assert max(windows) >= last_step - 2 * KEEP_WINDOWS
    assert max(sizes) < 1_000 and sizes[-1] <= sizes[0] + 20


def test_a_window_holds_at_most_steps_entries(tmp_path: Path) -> None:
    train(tmp_path, 100, save_steps=50, resume_check=ResumeCheckHook(steps=8))
    windows = read_journal(tmp_path)
    assert sorted(windows[50]) == list(range(51, 59))


def test_a_fresh_run_ignores_a_journal_left_without_checkpoints(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train(tmp_path, 12, scale=3.0)
    for checkpoint in tmp_path.glob("ckpt-*"):
        shutil.rmtree(checkpoint)  # the journal of that run stays behind
    with caplog.at_level(logging.INFO, logger="trainhooks"):
        train(tmp_path, 12)
    assert resume_check_records(caplog) == []
    assert read_journal(tmp_path)[10][11]["n"] == 11.0


def test_an_unreadable_journal_is_reported_and_training_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = crashed_copy(tmp_path)
    (copy / JOURNAL_NAME).write_text("{ not json")
    with caplog.at_level(logging.WARNING, logger="trainhooks"):
        train(copy, 20, scale=2.0)
    [record] = resume_check_records(caplog)
    assert JOURNAL_NAME in record.getMessage() and "not checked" in record.getMessage()
    windows = read_journal(copy)  # rewritten whole by the new run, completed at its end
    assert sorted(windows) == [10, 15, 20] and sorted(windows[15]) == [16, 17, 18, 19, 20]


def test_temp_files_of_an_interrupted_journal_write_are_removed(tmp_path: Path) -> None:
    copy = crashed_copy(tmp_path)
    left = copy / f".{JOURNAL_NAME}.tmp-{'0' * 32}"
    mine = copy / f".{JOURNAL_NAME}.tmp-keep"
    left.write_text("half")
    mine.write_text("not ours")
    train(copy, 16)
    assert not left.exists() and mine.exists()


def test_a_disabled_check_writes_no_journal(tmp_path: Path) -> None:
    train(tmp_path, 12, resume_check=ResumeCheckHook(enabled=False))
    assert not (tmp_path / JOURNAL_NAME).exists()


def test_a_check_without_a_saver_hook_fails_at_begin(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs the CheckpointSaverHook"):
        trainhooks.MonitoredSession(hooks=[ResumeCheckHook()], checkpoint_dir=tmp_path)


@pytest.mark.parametrize(
    "kwargs",
    [{"steps": 0}, {"steps": 5000}, {"rtol": -1.0}, {"on_divergence": "ignore"}],
)
def test_invalid_arguments_are_refused_with_the_rule(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ResumeCheckHook(**kwargs)


def test_a_hand_built_monitored_session_checks_with_the_saver_hook_it_is_given(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def run(directory: Path, last_step: int, scale: float, snapshot: Path | None = None) -> None:
        state = {"w": np.zeros(2)}
        saver = CheckpointSaverHook(directory, save_steps=5)
        hooks = [saver, ResumeCheckHook(saver), trainhooks.StopAtStepHook(last_step=last_step)]
        with trainhooks.MonitoredSession(hooks=hooks, state=state, checkpoint_dir=directory) as s:
            while not s.should_stop():
                state["w"] += scale / (s.global_step + 1)
                s.run(lambda: float(state["w"].sum()))  # a bare number is digested too
                if snapshot is not None and s.global_step == 7:
                    shutil.copytree(directory, snapshot)

    run(tmp_path / "run", 9, 1.0, snapshot=tmp_path / "crashed")
    with caplog.at_level(logging.WARNING, logger="trainhooks"):
        run(tmp_path / "crashed", 9, 1.5)
    [record] = resume_check_records(caplog)
    assert "step 6, re-run after restoring checkpoint 5" in record.getMessage()
    assert "returned the value = " in record.getMessage()
