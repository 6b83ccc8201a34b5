"""Rolling back: "latest" is the newest commit, not the highest step.

``restore(step=8)`` to roll back, train, ``save(step=9)``, crash: the next ``restore()``
must resume the step-9 checkpoint just written, not step 10 of the abandoned branch (TF's
pointer file would resume step 9). Every manifest carries a commit sequence, monotonic per
directory; readers pick the highest, retention evicts the abandoned branch first, and
``prune`` keeps the newest commits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import crc32c

from _support.store import blank_state, save_steps, state_for, step_of
from trainhooks import Saver, latest_checkpoint, list_checkpoints, prune_checkpoints
from trainhooks._cli._app import main as cli_main


def _steps(directory: Path) -> list[int]:
    return [info.step for info in list_checkpoints(directory)]


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


def test_rollback_save_crash_resumes_the_newest_commit(tmp_path: Path) -> None:
    save_steps(tmp_path, list(range(1, 11)), max_to_keep=None)
    tests = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{tests}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-c", _ROLL_BACK_AND_CRASH, os.fspath(tmp_path)],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    state = blank_state()
    with Saver() as saver:
        assert saver.restore(state, tmp_path).step == 9
    assert step_of(state) == 9
    assert latest_checkpoint(tmp_path).step == 9
    infos = list_checkpoints(tmp_path)
    assert [i.step for i in infos] == list(range(1, 11))  # listing keeps step order
    newest = max(infos, key=lambda i: i.sequence)
    assert newest.step == 9 and newest.sequence == 11
    assert [i.sequence for i in infos if i.step != 9] == [*range(1, 9), 10]


def test_the_sequence_continues_across_savers_and_processes(tmp_path: Path) -> None:
    save_steps(tmp_path, [5, 6], max_to_keep=None)
    save_steps(tmp_path, [3], max_to_keep=None)  # a new saver, a lower step
    assert [(i.step, i.sequence) for i in list_checkpoints(tmp_path)] == [(3, 3), (5, 1), (6, 2)]
    assert latest_checkpoint(tmp_path).step == 3


def test_re_saving_a_step_makes_it_the_newest_commit(tmp_path: Path) -> None:
    save_steps(tmp_path, [1, 2, 3, 2], max_to_keep=None)
    assert latest_checkpoint(tmp_path).step == 2
    assert [(i.step, i.sequence) for i in list_checkpoints(tmp_path)] == [(1, 1), (2, 4), (3, 3)]


def test_retention_evicts_the_abandoned_branch_first(tmp_path: Path) -> None:
    save_steps(tmp_path, list(range(10, 101, 10)), max_to_keep=3)
    assert _steps(tmp_path) == [80, 90, 100]
    with Saver(max_to_keep=3) as saver:
        state = blank_state()
        saver.restore(state, tmp_path, step=80)
        saver.save(state_for(85), tmp_path, step=85)
        assert _steps(tmp_path) == [80, 85, 100]  # 90 (abandoned) went first, not 80
        saver.save(state_for(86), tmp_path, step=86)
        assert _steps(tmp_path) == [80, 85, 86]


def test_an_abandoned_victim_a_crash_left_is_deleted_by_the_next_writer(tmp_path: Path) -> None:
    save_steps(tmp_path, list(range(10, 101, 10)), max_to_keep=3)
    code = textwrap.dedent(
        """
        import sys
        from _support.store import state_for
        from trainhooks import Saver
        Saver(max_to_keep=3).save(state_for(85), sys.argv[1], step=85)
        """
    )
    tests = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": f"{tests}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "TRAINHOOKS_FAULTS": "after_rename=kill",  # committed; its victim (90) not deleted
    }
    done = subprocess.run(
        [sys.executable, "-c", code, os.fspath(tmp_path)], env=env, capture_output=True, check=False
    )
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    assert _steps(tmp_path) == [80, 85, 90, 100]
    with Saver(max_to_keep=3) as saver:
        saver.save(state_for(86), tmp_path, step=86)
    assert _steps(tmp_path) == [80, 85, 86]


def test_prune_keeps_the_newest_commits(tmp_path: Path) -> None:
    save_steps(tmp_path, [1, 2, 3, 4], max_to_keep=None)
    save_steps(tmp_path, [2], max_to_keep=None)  # rolled back to 1 and saved 2 again
    removed = prune_checkpoints(tmp_path, keep=2)
    assert sorted(i.step for i in removed) == [1, 3]
    assert _steps(tmp_path) == [2, 4]
    assert latest_checkpoint(tmp_path).step == 2


def _strip_sequence(checkpoint: Path) -> None:
    """Rewrite a manifest as trainhooks wrote it before commits had a sequence."""
    path = checkpoint / "manifest.json"
    body = json.loads(path.read_bytes())
    body.pop("sequence", None)
    body.pop("manifest_crc32c")

    def canonical(value: object) -> bytes:
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()

    body["manifest_crc32c"] = crc32c.crc32c(canonical(body))
    path.write_bytes(canonical(body))


def test_checkpoints_without_a_sequence_are_older_than_any_with_one(tmp_path: Path) -> None:
    infos = save_steps(tmp_path, [5, 6], max_to_keep=None)
    for info in infos:
        _strip_sequence(info.path)
    assert [(i.step, i.sequence) for i in list_checkpoints(tmp_path)] == [(5, 0), (6, 0)]
    assert latest_checkpoint(tmp_path).step == 6  # no sequence anywhere: the highest step
    save_steps(tmp_path, [2], max_to_keep=None)
    assert latest_checkpoint(tmp_path).step == 2
    assert [(i.step, i.sequence) for i in list_checkpoints(tmp_path)] == [(2, 1), (5, 0), (6, 0)]


def test_the_cli_takes_the_newest_commit_and_shows_sequences(
    tmp_path: Path, capsys: object
) -> None:
    save_steps(tmp_path, [1, 2, 3], max_to_keep=None)
    save_steps(tmp_path, [2], max_to_keep=None)
    assert cli_main(["ls", "--json", str(tmp_path)]) == 0
    listed = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    assert [(e["step"], e["sequence"], e["newest"]) for e in listed] == [
        (1, 1, False),
        (2, 4, True),
        (3, 3, False),
    ]
    assert cli_main(["show", "--json", str(tmp_path)]) == 0
    shown = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    assert shown["checkpoint"]["step"] == 2


def test_a_checkpoint_written_by_several_processes_takes_the_next_commit_number(
    tmp_path: Path,
) -> None:
    import numpy as np

    from trainhooks._store._commit import TensorSource
    from trainhooks._store._sharded import commit_staged, shard_file_name, stage, write_shard

    save_steps(tmp_path, [5, 6], max_to_keep=None)
    staging = stage(tmp_path, "ckpt", 3)
    shards = [
        write_shard(
            staging,
            shard_file_name(rank, 2),
            3,
            [TensorSource(f"w[{rank}]", "F32", (2,), memoryview(np.ones(2, np.float32)).cast("B"))],
        )
        for rank in range(2)
    ]
    info = commit_staged(tmp_path, "ckpt", 3, staging, shards, {"type": "value", "value": 0}, {})
    assert info.sequence == 3
    assert latest_checkpoint(tmp_path).step == 3
