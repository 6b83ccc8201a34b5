"""Rolling back on a bucket: "latest" is the newest commit there too, not the highest step.

The same promises as ``tests/store/test_rollback.py`` makes for a local directory: every
manifest a remote save writes carries its commit ``sequence`` (monotonic per prefix,
planned by the lease holder), ``latest_checkpoint``, ``Saver.restore()``, ``prune`` and the
CLI pick the newest commit, and retention evicts an abandoned branch first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import crc32c
import pytest

from _support.store import blank_state, state_for, step_of
from trainhooks import Saver, latest_checkpoint, list_checkpoints, prune_checkpoints
from trainhooks._cli import main as cli_main

_TESTS = Path(__file__).resolve().parents[2]


def _save(url: str, steps: list[int], max_to_keep: int | None = None) -> None:
    """Save ``steps`` with one saver, as one run of a job would."""
    with Saver(max_to_keep=max_to_keep) as saver:
        for step in steps:
            saver.save(state_for(step), url, step=step)


def _steps(url: str) -> list[int]:
    return [info.step for info in list_checkpoints(url)]


def _run_child(code: str, url: str, faults: str | None = None) -> int:
    env = {**os.environ, "PYTHONPATH": f"{_TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if faults:
        env["TRAINHOOKS_FAULTS"] = faults
    done = subprocess.run(
        [sys.executable, "-c", code, url], env=env, capture_output=True, timeout=120, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    return done.returncode


_ROLL_BACK_AND_CRASH = textwrap.dedent(
    """
    import os, signal, sys
    from _support.store import blank_state, state_for
    from trainhooks import Saver

    saver = Saver(max_to_keep=None)
    state = blank_state()
    saver.restore(state, sys.argv[1], step=8)
    saver.save(state_for(9), sys.argv[1], step=9)
    os.kill(os.getpid(), signal.SIGKILL)  # the crash, right after the save returned
    """
)


def test_rollback_save_crash_resumes_the_newest_commit(s3_url: str) -> None:
    _save(s3_url, [7, 8, 9, 10])
    _run_child(_ROLL_BACK_AND_CRASH, s3_url)
    state = blank_state()
    with Saver() as saver:
        assert saver.restore(state, s3_url).step == 9
    assert step_of(state) == 9
    latest = latest_checkpoint(s3_url)
    assert latest is not None and latest.step == 9
    infos = list_checkpoints(s3_url)
    assert [(i.step, i.sequence) for i in infos] == [(7, 1), (8, 2), (9, 5), (10, 4)]


def test_the_sequence_continues_across_savers_and_lists_on_a_url(s3_url: str) -> None:
    _save(s3_url, [5, 6])
    _save(s3_url, [3])  # a new saver (a new lease holder), a lower step
    assert [(i.step, i.sequence) for i in list_checkpoints(s3_url)] == [(3, 3), (5, 1), (6, 2)]
    latest = latest_checkpoint(s3_url)
    assert latest is not None and (latest.step, latest.sequence) == (3, 3)


def test_re_saving_a_step_on_a_url_makes_it_the_newest_commit(s3_url: str) -> None:
    _save(s3_url, [1, 2, 3, 2])
    assert [(i.step, i.sequence) for i in list_checkpoints(s3_url)] == [(1, 1), (2, 4), (3, 3)]
    latest = latest_checkpoint(s3_url)
    assert latest is not None and latest.step == 2


def test_retention_on_a_url_evicts_the_abandoned_branch_first(s3_url: str) -> None:
    _save(s3_url, [10, 20, 30, 40, 50], max_to_keep=3)
    assert _steps(s3_url) == [30, 40, 50]
    with Saver(max_to_keep=3) as saver:
        saver.restore(blank_state(), s3_url, step=30)
        saver.save(state_for(35), s3_url, step=35)
    assert _steps(s3_url) == [30, 35, 50]  # 40 (abandoned) went first, not 30
    _save(s3_url, [36], max_to_keep=3)  # the next run continues the newest commit's record
    assert _steps(s3_url) == [30, 35, 36]


_SAVE_35 = textwrap.dedent(
    """
    import sys
    from _support.store import state_for
    from trainhooks import Saver
    Saver(max_to_keep=3).save(state_for(35), sys.argv[1], step=35)
    """
)


def test_an_abandoned_victim_a_crash_left_is_deleted_by_the_next_writer(s3_url: str) -> None:
    _save(s3_url, [10, 20, 30, 40, 50], max_to_keep=3)
    # committed (its manifest exists); its victim, 40, not yet deleted
    _run_child(_SAVE_35, s3_url, faults="remote_after_manifest=kill")
    assert _steps(s3_url) == [30, 35, 40, 50]
    _save(s3_url, [36], max_to_keep=3)
    assert _steps(s3_url) == [30, 35, 36]


def _rolled_back_run(url: str) -> None:
    """Commits 10, 20, 30 (sequences 1-3), then a rollback to 10 and commits 15, 16 (4, 5)."""
    _save(url, [10, 20, 30])
    with Saver(max_to_keep=None) as saver:
        saver.restore(blank_state(), url, step=10)
        for step in (15, 16):
            saver.save(state_for(step), url, step=step)


@pytest.mark.parametrize("damage", ["manifest", "data"])
def test_a_corrupt_newest_commit_falls_back_to_the_previous_commit(
    s3_url: str,
    s3,  # type: ignore[no-untyped-def]
    damage: str,
) -> None:
    _rolled_back_run(s3_url)
    newest = f"{s3_url}/ckpt-000000000016"
    if damage == "manifest":
        s3.pipe_file(f"{newest}/manifest.json", b"{not json")
    else:
        data = next(p for p in s3.find(newest) if p.endswith(".safetensors"))
        s3.pipe_file(data, s3.cat_file(data)[:-4])  # truncated: shorter than the manifest says
    latest = latest_checkpoint(s3_url)
    assert latest is not None and latest.step == 15  # not 30, the highest step
    state = blank_state()
    with pytest.warns(UserWarning, match="restored step 15"), Saver() as saver:
        assert saver.restore(state, s3_url).step == 15
    assert step_of(state) == 15


def test_prune_on_a_url_keeps_the_newest_commits(s3_url: str) -> None:
    _save(s3_url, [1, 2, 3, 4])
    _save(s3_url, [2])  # rolled back to 1 and saved 2 again
    assert [i.step for i in prune_checkpoints(s3_url, keep=2, dry_run=True)] == [1, 3]
    assert [i.step for i in prune_checkpoints(s3_url, keep=2)] == [1, 3]
    assert _steps(s3_url) == [2, 4]
    latest = latest_checkpoint(s3_url)
    assert latest is not None and latest.step == 2


def test_the_cli_on_a_url_marks_and_shows_the_newest_commit(
    s3_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    _rolled_back_run(s3_url)
    capsys.readouterr()
    assert cli_main(["ls", "--json", s3_url]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["step"], r["sequence"], r["newest"]) for r in rows] == [
        (10, 1, False),
        (15, 4, False),
        (16, 5, True),
        (20, 2, False),
        (30, 3, False),
    ]
    assert cli_main(["show", "--flat", s3_url]) == 0
    assert "using the newest, step 16" in capsys.readouterr().err


def _strip_sequence(s3: Any, checkpoint: str) -> None:  # type: ignore[no-untyped-def]
    """Rewrite a manifest as remote saves wrote it before they recorded a sequence."""
    path = f"{checkpoint}/manifest.json"
    body = json.loads(s3.cat_file(path))
    body.pop("sequence", None)
    body.pop("manifest_crc32c")

    def canonical(value: object) -> bytes:
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()

    body["manifest_crc32c"] = crc32c.crc32c(canonical(body))
    s3.pipe_file(path, canonical(body))


def test_checkpoints_without_a_sequence_still_list_and_count_as_older(s3_url: str, s3) -> None:  # type: ignore[no-untyped-def]
    _save(s3_url, [5, 6])
    for step in (5, 6):
        _strip_sequence(s3, f"{s3_url}/ckpt-{step:012d}")
    assert [(i.step, i.sequence) for i in list_checkpoints(s3_url)] == [(5, 0), (6, 0)]
    latest = latest_checkpoint(s3_url)
    assert latest is not None and latest.step == 6  # no sequence anywhere: the highest step
    _save(s3_url, [2])
    assert [(i.step, i.sequence) for i in list_checkpoints(s3_url)] == [(2, 1), (5, 0), (6, 0)]
    latest = latest_checkpoint(s3_url)
    assert latest is not None and latest.step == 2
    state = blank_state()
    with Saver() as saver:
        assert saver.restore(state, s3_url).step == 2


def test_a_failed_upload_never_lends_its_number_to_the_next_commit(s3_url: str) -> None:
    """A failure at the manifest's create may hide a commit (its answer lost), so the next
    commit takes a new number; a save refused before anything is sent keeps the count."""
    from trainhooks import CheckpointFormatError, CheckpointWriteError
    from trainhooks._store import _faults

    with Saver(max_to_keep=None) as saver:
        saver.save(state_for(1), s3_url, step=1)
        with pytest.raises(CheckpointFormatError):
            saver.save({"x": state_for(2)["weight"]}, s3_url, step=2, metadata={1: "a"})
        saver.save(state_for(2), s3_url, step=2)
        _faults.configure("remote_before_manifest=eio")
        try:
            with pytest.raises(CheckpointWriteError):
                saver.save(state_for(3), s3_url, step=3)
        finally:
            _faults.configure(None)
        saver.save(state_for(4), s3_url, step=4)
    assert [(i.step, i.sequence) for i in list_checkpoints(s3_url)] == [(1, 1), (2, 2), (4, 4)]
