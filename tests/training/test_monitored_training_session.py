"""MonitoredTrainingSession: who is the chief, which standard hooks it installs, TF's defaults."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _support.session import (
    Counter,
    RecordingHook,
    RecordingListener,
    events_of,
    quiet_session,
    save_pair,
)
from trainhooks import (
    CheckpointSaverHook,
    MonitoredTrainingSession,
    Saver,
    StepCounterHook,
    list_checkpoints,
)


def test_chief_only_hooks_run_only_on_the_chief(trace: list[str], counter: Counter) -> None:
    for chief in (True, False):
        with quiet_session(
            is_chief=chief,
            hooks=[RecordingHook(f"everywhere-{chief}", trace)],
            chief_only_hooks=[RecordingHook(f"chief-{chief}", trace)],
        ) as sess:
            sess.run(counter.step)

    assert events_of(trace, "chief-True")
    assert not events_of(trace, "chief-False")
    assert events_of(trace, "everywhere-True") and events_of(trace, "everywhere-False")


def test_non_chief_restores_but_installs_no_saver(tmp_path: Path, counter: Counter) -> None:
    with quiet_session(checkpoint_dir=tmp_path, state=counter.state, save_checkpoint_steps=2) as s:
        for _ in range(3):
            s.run(counter.step)
    worker = Counter()
    with quiet_session(is_chief=False, checkpoint_dir=tmp_path, state=worker.state) as sess:
        assert sess.global_step == 3
        sess.run(worker.step)

    assert worker.value == 4
    assert [i.step for i in list_checkpoints(tmp_path)] == [0, 2, 3]


def test_default_saver_installed_with_checkpoint_dir_saves_at_creation_and_end(
    tmp_path: Path, counter: Counter
) -> None:
    with quiet_session(checkpoint_dir=tmp_path, state=counter.state) as sess:  # 600 s default
        for _ in range(5):
            sess.run(counter.step)

    assert [i.step for i in list_checkpoints(tmp_path)] == [0, 5]


def test_save_checkpoint_steps_replaces_the_600_second_default(
    tmp_path: Path, counter: Counter
) -> None:
    with quiet_session(
        checkpoint_dir=tmp_path, state=counter.state, save_checkpoint_steps=2, max_to_keep=2
    ) as sess:
        for _ in range(5):
            sess.run(counter.step)

    assert [i.step for i in list_checkpoints(tmp_path)] == [4, 5]


def test_user_saver_hook_for_the_same_directory_replaces_the_default_one(
    tmp_path: Path, trace: list[str], counter: Counter
) -> None:
    hook = CheckpointSaverHook(tmp_path, save_steps=2, listeners=[RecordingListener("a", trace)])
    with quiet_session(checkpoint_dir=tmp_path, state=counter.state, chief_only_hooks=[hook]) as s:
        for _ in range(3):
            s.run(counter.step)

    assert trace == ["a.begin", *save_pair("a", 0, 2, 3), "a.end(3)"]


def test_max_to_keep_with_an_own_saver_hook_keeping_another_number_is_refused(
    tmp_path: Path, counter: Counter
) -> None:
    hook = CheckpointSaverHook(tmp_path, save_steps=2)  # keeps 5
    with pytest.raises(ValueError, match=r"would be ignored.*keeps 5.*max_to_keep=2\)\)"):
        quiet_session(
            checkpoint_dir=tmp_path, state=counter.state, chief_only_hooks=[hook], max_to_keep=2
        )
    mine = CheckpointSaverHook(tmp_path, save_steps=2, saver=Saver(max_to_keep=3))
    with pytest.raises(ValueError, match=r"saver=Saver\(max_to_keep=2\)"):
        quiet_session(
            checkpoint_dir=tmp_path, state=counter.state, chief_only_hooks=[mine], max_to_keep=2
        )
    assert list_checkpoints(tmp_path) == []  # refused before anything was written


def test_max_to_keep_agreeing_with_the_own_saver_hook_is_accepted(
    tmp_path: Path, counter: Counter
) -> None:
    hook = CheckpointSaverHook(tmp_path, save_steps=1, max_to_keep=2)
    with quiet_session(
        checkpoint_dir=tmp_path, state=counter.state, chief_only_hooks=[hook], max_to_keep=2
    ) as sess:
        for _ in range(4):
            sess.run(counter.step)

    assert [i.step for i in list_checkpoints(tmp_path)] == [3, 4]


def test_step_counter_installed_on_chief_with_checkpoint_dir(
    tmp_path: Path, counter: Counter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trainhooks")
    with MonitoredTrainingSession(
        checkpoint_dir=tmp_path,
        state=counter.state,
        log_step_count_steps=2,
        save_summaries_steps=None,
    ) as sess:
        assert any(isinstance(h, StepCounterHook) for h in sess._hooks)
        for _ in range(5):
            sess.run(counter.step)

    assert any("global_step/sec" in r.getMessage() for r in caplog.records)


def test_missing_summary_saver_is_skipped_with_one_warning(
    tmp_path: Path,
    counter: Counter,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trainhooks._training import _defaults

    monkeypatch.setitem(sys.modules, "trainhooks._hooks._summary_saver", None)  # ImportError
    monkeypatch.setattr(_defaults, "_warned_unavailable", set())
    for _ in range(2):
        with MonitoredTrainingSession(
            checkpoint_dir=tmp_path, state=counter.state, save_summaries_steps=1
        ) as sess:
            sess.run(counter.step)

    warnings = [r for r in caplog.records if "SummarySaverHook is unavailable" in r.getMessage()]
    assert len(warnings) == 1


def test_summary_saver_installed_when_available(tmp_path: Path, counter: Counter) -> None:
    summary = pytest.importorskip("trainhooks._hooks._summary_saver")
    with MonitoredTrainingSession(
        checkpoint_dir=tmp_path, state=counter.state, save_summaries_steps=1
    ) as sess:
        assert any(isinstance(h, summary.SummarySaverHook) for h in sess._hooks)
        sess.run(counter.step)


def test_is_chief_defaults_to_rank_0_of_torch_distributed(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    script = textwrap.dedent(
        f"""
        import sys
        import torch.distributed as dist
        import trainhooks as th
        rank = int(sys.argv[1])
        dist.init_process_group("gloo", init_method="file://{tmp_path}/rendezvous",
                                rank=rank, world_size=2)
        ran = []
        class Chief(th.SessionRunHook):
            def begin(self):
                ran.append(True)
        with th.MonitoredTrainingSession(chief_only_hooks=[Chief()]) as sess:
            sess.run(lambda: None)
        print(f"rank={{rank}} chief_hook_ran={{bool(ran)}}")
        dist.destroy_process_group()
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(rank)], stdout=subprocess.PIPE, text=True
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=240)[0].strip() for p in procs]

    assert [p.returncode for p in procs] == [0, 0]
    assert outputs == ["rank=0 chief_hook_ran=True", "rank=1 chief_hook_ran=False"]


def test_monitored_training_session_takes_keywords_only_with_tf_defaults() -> None:
    import inspect

    parameters = inspect.signature(MonitoredTrainingSession).parameters

    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    assert parameters["save_checkpoint_secs"].default == 600
    assert parameters["save_summaries_steps"].default == 100
    with pytest.raises(TypeError):
        MonitoredTrainingSession("", True)  # type: ignore[misc]  # TF's (master, is_chief)


def test_explicit_save_checkpoint_secs_with_steps_is_tf_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of save_secs and save_steps"):
        quiet_session(checkpoint_dir=tmp_path, save_checkpoint_secs=60, save_checkpoint_steps=10)


def test_async_save_makes_the_default_saver_save_in_the_background(
    tmp_path: Path, counter: Counter, caplog: pytest.LogCaptureFixture
) -> None:
    from trainhooks import load

    with (
        caplog.at_level(logging.INFO, logger="trainhooks"),
        quiet_session(
            checkpoint_dir=tmp_path, state=counter.state, save_checkpoint_steps=2, async_save=True
        ) as sess,
    ):
        for _ in range(5):
            sess.run(counter.step)

    snapshots = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Snapshot")]
    assert len(snapshots) == 4  # steps 0, 2, 4 and the final 5, each a background save
    # every save, the final one included, is durable once the session has closed
    infos = list_checkpoints(tmp_path)
    assert [i.step for i in infos] == [0, 2, 4, 5]
    for info in infos:
        assert load(info.path)["w"][0] == info.step
