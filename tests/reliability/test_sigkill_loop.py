"""SIGKILL at any moment of a train-and-save loop never loses or corrupts a checkpoint.

A worker process trains a small torch model and saves at every step; the test kills it
with a real SIGKILL, then checks the directory: the newest checkpoint restores with the
exact weights of an uninterrupted run, every listed checkpoint verifies, the step never
goes backwards, every save that returned is still there, staging and deletion leftovers
are never listed and are gone once the next worker saved.

Kills are biased into the save: a worker either dies by itself at a named fault point
(``point=kill@N``), or a fault point pauses it (``point=sleep:S``) while the parent kills
it at a random moment of that window, or the parent kills at a random moment unaided.

The loops run in both saving modes. In async mode the save's fault points fire on the
writer thread while training goes on, and a kill lands while a background write is in
flight: the previous checkpoint must then be the newest valid one, and a step may be
committed without having been announced yet (at most one: the bound below).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import trainhooks
from _support.reliability import (
    Reference,
    WorkerRun,
    Zygote,
    assert_listing_clean,
    assert_restores_exactly,
    events_of,
    leftovers,
    long_only,
    report_figure,
    run_child,
)

SAVE_POINTS = (
    "after_data_file",
    "before_manifest",
    "before_dir_fsync",
    "before_rename",
    "after_rename",
    "before_parent_fsync",
    "fsync",
)
RETENTION_POINTS = ("retention_after_mark", "retention_before_remove")
LISTENER_POINTS = ("listener_before_save", "listener_after_save")
NEVER = 10**9  # last_step of a worker that is meant to be killed
SELF_KILL_FALLBACK_SAVES = 6  # a worker whose fault point never fired is killed after this


@dataclass(frozen=True)
class Plan:
    """How one worker dies: by its own fault point, or by the parent after some saves."""

    kind: str  # "self" | "window" | "random"
    faults: str | None
    point: str | None
    saves_before_kill: int
    delay: float


@dataclass
class Tally:
    """What the loop did, for the figures in docs/reliability.md."""

    kills: int = 0
    self_kills: Counter[str] = field(default_factory=Counter)
    parent_kills: Counter[str] = field(default_factory=Counter)
    leftovers_seen: int = 0
    leftovers_cleaned: int = 0
    resumes_checked: int = 0
    retained_at_end: int = 0


def choose_plan(rng: random.Random, points: tuple[str, ...]) -> Plan:
    roll, point = rng.random(), rng.choice(points)
    if roll < 0.4:
        spec = f"{point}=kill@{rng.randint(1, 3)}"
        return Plan("self", spec, point, SELF_KILL_FALLBACK_SAVES, 0.0)
    if roll < 0.8:
        pause = rng.choice((0.005, 0.02))
        spec = f"{point}=sleep:{pause}"
        return Plan("window", spec, point, rng.randint(0, 2), rng.uniform(0.0, 2 * pause))
    return Plan("random", None, None, rng.randint(0, 2), rng.uniform(0.0, 0.02))


def drive(zygote: Zygote, config: dict[str, Any], plan: Plan) -> WorkerRun:
    """Run one worker to its death (or end), killing it as the plan says."""
    pid = zygote.spawn(config)
    run = WorkerRun(pid, None, [], None, -1, False)
    while True:
        event, value = zygote.next_event()
        if event == "exit":
            exited, status = map(int, value.split())
            assert exited == pid
            run.status = status
            return run
        _record(run, event, value)
        due = run.start is not None and len(run.saved) >= plan.saves_before_kill
        if due and not run.killed_by_parent and _kill_after(zygote, run, plan):
            return run


def _record(run: WorkerRun, event: str, value: str) -> None:
    if event == "start":
        run.start = int(value)
    elif event == "saved":
        run.saved.append(int(value))
    elif event == "done":
        run.done = int(value)
    else:
        pytest.fail(f"unexpected worker event {event} {value}")


def _kill_after(zygote: Zygote, run: WorkerRun, plan: Plan) -> bool:
    """SIGKILL the worker after the plan's random delay; True if it had already exited."""
    time.sleep(plan.delay)  # the random moment of the kill, not a synchronisation
    while (line := zygote.poll_event()) is not None:
        if line[0] == "exit":
            run.status = int(line[1].split()[1])
            return True
        _record(run, *line)
    os.kill(run.pid, signal.SIGKILL)
    run.killed_by_parent = True
    return False


def check_after_kill(
    directory: Path, reference: Reference, run: WorkerRun, latest: int, kills_so_far: int
) -> int:
    """All invariants after one dead worker; returns the new latest step."""
    assert run.sigkilled, f"worker {run.pid} was not killed (status {run.status})"
    if run.start is not None:
        assert run.start == max(latest, 0), "the worker did not resume from the newest save"
    info = trainhooks.latest_checkpoint(directory)
    if info is None:
        assert latest < 0 and not run.saved, "a committed checkpoint disappeared"
        return latest
    announced = max([*run.saved, latest])
    assert info.step >= announced, f"step went back: {info.step} < {announced}"
    assert info.step <= max([announced, run.start or 0]) + 1, "a step was never trained"
    # all listed checkpoints verify in full every 10th kill, the newest three every time
    assert_listing_clean(directory, verify_newest=None if kills_so_far % 10 == 0 else 3)
    assert_restores_exactly(directory, reference, info.step)
    tree = trainhooks.load(info.path)
    assert np.all(np.asarray(tree["marker"]) == float(info.step))
    return info.step


def kill_loop(
    zygote: Zygote,
    reference: Reference,
    directory: Path,
    mode: str,
    kills: int,
    seed: int,
    background: bool = False,
) -> Tally:
    """``kills`` workers killed one after another on one directory, checked after each
    (``background``: saving with ``save_async`` / ``async_save=True``)."""
    rng, tally, latest = random.Random(seed), Tally(), -1
    points = SAVE_POINTS + RETENTION_POINTS + (LISTENER_POINTS if mode == "session" else ())
    config = {
        "mode": mode,
        "directory": str(directory),
        "last_step": NEVER,
        "max_to_keep": 2,
        "async": background,
    }
    while tally.kills < kills:
        plan = choose_plan(rng, points)
        before = leftovers(directory)
        run = drive(zygote, {**config, "faults": plan.faults}, plan)
        if run.start is not None and any(step > run.start for step in run.saved):
            assert not before & leftovers(directory), "leftovers survived the next start"
            tally.leftovers_cleaned += len(before)
        latest = check_after_kill(directory, reference, run, latest, tally.kills)
        tally.kills += 1
        tally.resumes_checked += run.start is not None
        if run.killed_by_parent:
            tally.parent_kills[plan.point or "random"] += 1
        else:
            tally.self_kills[plan.point or "?"] += 1
        tally.leftovers_seen += len(leftovers(directory))
    tally.retained_at_end = _finish_cleanly(zygote, reference, directory, config, latest)
    # the session's default resume check follows the worker's saver; state is complete
    assert "resume check" not in zygote.log_path.read_text(errors="replace")
    return tally


def _finish_cleanly(
    zygote: Zygote, reference: Reference, directory: Path, config: dict[str, Any], latest: int
) -> int:
    """A last worker without faults resumes, ends normally and leaves no leftovers."""
    last = max(latest, 0) + 3
    plan = Plan("none", None, None, NEVER, 0.0)
    run = drive(zygote, {**config, "last_step": last, "faults": None}, plan)
    assert run.status == 0 and run.done == last, zygote.log_tail()
    assert not leftovers(directory)
    infos = assert_listing_clean(directory)
    assert infos[-1].step == last
    assert_restores_exactly(directory, reference, last)
    return len(infos)


def _report(mode: str, tally: Tally) -> None:
    report_figure(
        f"sigkill_loop_{mode}",
        kills=tally.kills,
        self_kills=dict(tally.self_kills),
        parent_kills=dict(tally.parent_kills),
        resumes_checked=tally.resumes_checked,
        leftovers_seen=tally.leftovers_seen,
        leftovers_cleaned=tally.leftovers_cleaned,
        retained_at_end_with_max_to_keep_2=tally.retained_at_end,
        lost=0,
    )


def test_saver_loop_survives_sigkill_at_random_moments(
    zygote: Zygote, reference: Reference, tmp_path: Path
) -> None:
    tally = kill_loop(zygote, reference, tmp_path / "ckpt", "saver", kills=50, seed=1)
    assert sum(tally.self_kills.values()) > 0 and sum(tally.parent_kills.values()) > 0
    _report("saver", tally)


def test_monitored_session_survives_sigkill_at_random_moments(
    zygote: Zygote, reference: Reference, tmp_path: Path
) -> None:
    tally = kill_loop(zygote, reference, tmp_path / "ckpt", "session", kills=50, seed=2)
    assert sum(tally.self_kills.values()) > 0 and sum(tally.parent_kills.values()) > 0
    _report("session", tally)


def test_async_saver_loop_survives_sigkill_with_a_write_in_flight(
    zygote: Zygote, reference: Reference, tmp_path: Path
) -> None:
    tally = kill_loop(zygote, reference, tmp_path / "ckpt", "saver", 20, seed=3, background=True)
    assert sum(tally.self_kills.values()) > 0 and sum(tally.parent_kills.values()) > 0
    _report("saver_async", tally)


def test_async_monitored_session_survives_sigkill_with_a_write_in_flight(
    zygote: Zygote, reference: Reference, tmp_path: Path
) -> None:
    tally = kill_loop(zygote, reference, tmp_path / "ckpt", "session", 20, seed=4, background=True)
    assert sum(tally.self_kills.values()) > 0 and sum(tally.parent_kills.values()) > 0
    _report("session_async", tally)


@long_only
@pytest.mark.parametrize("mode", ["saver", "session"])
def test_async_loops_survive_a_thousand_sigkills(
    zygote: Zygote, reference: Reference, tmp_path: Path, mode: str
) -> None:
    tally = kill_loop(zygote, reference, tmp_path / "ckpt", mode, 1000, seed=13, background=True)
    _report(f"{mode}_async_long", tally)


@long_only
def test_saver_loop_survives_a_thousand_sigkills(
    zygote: Zygote, reference: Reference, tmp_path: Path
) -> None:
    tally = kill_loop(zygote, reference, tmp_path / "ckpt", "saver", kills=1000, seed=11)
    _report("saver_long", tally)


@long_only
def test_monitored_session_survives_a_thousand_sigkills(
    zygote: Zygote, reference: Reference, tmp_path: Path
) -> None:
    tally = kill_loop(zygote, reference, tmp_path / "ckpt", "session", kills=1000, seed=12)
    _report("session_long", tally)


@pytest.mark.parametrize("mode", ["saver", "session"])
def test_fault_env_var_kill_before_rename_leaves_previous_step_and_is_cleaned(
    mode: str, tmp_path: Path
) -> None:
    """``TRAINHOOKS_FAULTS=before_rename=kill@3`` in a fresh process: steps 0, 1 survive."""
    directory = tmp_path / "ckpt"
    config = {"mode": mode, "directory": str(directory), "last_step": 10, "max_to_keep": 5}
    killed = run_child(config, faults="before_rename=kill@3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-3000:]
    assert ("saved", 1) in events_of(killed.stdout)
    assert [i.step for i in trainhooks.list_checkpoints(directory)] == [0, 1]
    staged = leftovers(directory)
    assert staged and all(name.startswith("ckpt-000000000002.tmp-") for name in staged)
    resumed = run_child({**config, "last_step": 4})
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    assert events_of(resumed.stdout)[0] == ("start", 1)
    assert not leftovers(directory)
    assert [i.step for i in trainhooks.list_checkpoints(directory)] == [0, 1, 2, 3, 4]


def test_a_kill_between_commit_and_retention_leaves_no_extra_checkpoint_forever(
    tmp_path: Path,
) -> None:
    """max_to_keep=2, killed right after committing step 2 (before retention removed step 0):
    once the next run has saved a few more steps, only the newest two may remain. Otherwise
    every crash in that window leaks one checkpoint for good (12 kept instead of 2 after the
    50-kill loop above)."""
    directory = tmp_path / "ckpt"
    config = {"mode": "saver", "directory": str(directory), "last_step": 10, "max_to_keep": 2}
    killed = run_child(config, faults="after_rename=kill@3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-3000:]
    assert [i.step for i in trainhooks.list_checkpoints(directory)] == [0, 1, 2]
    resumed = run_child({**config, "last_step": 6})
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    assert [i.step for i in trainhooks.list_checkpoints(directory)] == [5, 6]
