"""Child process of the reliability suite: trains a small torch model and saves every step.

Two ways to run it:

* ``python child_train.py --zygote``: imports torch and trainhooks once, then forks one
  worker per JSON line read on stdin. A SIGKILL loop of a thousand kills then costs a
  fork per kill instead of a two-second torch import per kill.
* ``python child_train.py '<json config>'``: one worker in this very process; fault
  points then come from ``TRAINHOOKS_FAULTS``, exactly as a user would set them.

A worker reports on stdout, one line per event, written with ``os.write`` so that nothing
waits in a buffer when SIGKILL arrives: ``start <step>`` once its state is restored (or
initialised), ``saved <step>`` after each save returned, ``done <step>`` at a normal end.
The zygote adds ``worker <pid>`` before and ``exit <pid> <wait status>`` after each worker.

Training is a pure function of the step (the batch of step ``s`` comes from a generator
seeded with ``s``), so the weights after step ``s`` are the same whatever kills happened
before; the parent replays the steps to check a restored checkpoint bit for bit.

Config keys: ``mode`` ("saver": a bare ``Saver`` loop; "session": the same training through
``MonitoredTrainingSession`` and ``CheckpointSaverHook``; "early_stop": the session with an
evaluator, an early stopper and an exporter, see ``run_early_stop_worker``), ``directory``,
``last_step``, ``max_to_keep``, ``faults`` (a fault spec configured in-process, zygote
workers only), ``marker_len`` (elements of the float64 marker tensor: the bulk of each
save) and ``async`` (save in the background: ``Saver.save_async`` / ``async_save=True``).
An async worker says ``saved <step>`` once that step is durable: the saver loop from the
future's callback, which runs on the writer thread before it starts the next save; the
session loop from ``after_save``. Either way at most one committed step is not yet
announced.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

MARKER_LEN = 16384  # 128 KiB of float64: makes each save write (and fsync) some real bytes


def announce(event: str, value: int | str) -> None:
    """Write one event line with a single unbuffered write (survives SIGKILL right after)."""
    os.write(1, f"{event} {value}\n".encode())


def build_state(torch: Any, marker_len: int = MARKER_LEN) -> dict[str, Any]:
    """The state every worker and the parent's replay start from (seeded, deterministic)."""
    torch.manual_seed(1234)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return {
        "model": model,
        "optimizer": optimizer,
        "marker": torch.zeros(marker_len, dtype=torch.float64),
        "progress": {"step": 0},
    }


def train_step(torch: Any, state: dict[str, Any], step: int) -> dict[str, float]:
    """One optimisation step whose batch depends only on ``step``; marks the state with it."""
    generator = torch.Generator().manual_seed(step)
    inputs = torch.randn(16, 8, generator=generator)
    targets = torch.randn(16, 2, generator=generator)
    optimizer = state["optimizer"]
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.mse_loss(state["model"](inputs), targets)
    loss.backward()
    loss = loss.detach()
    optimizer.step()
    state["marker"].fill_(float(step))
    state["progress"]["step"] = step
    return {"loss": loss.item()}


def check_restored(state: dict[str, Any], step: int) -> None:
    """Fail loudly when the restored objects do not carry the step the store reported."""
    marker = state["marker"]
    if state["progress"]["step"] != step or not bool((marker == float(step)).all()):
        raise AssertionError(
            f"restored state disagrees with step {step}: progress={state['progress']}, "
            f"marker[0]={float(marker[0])}"
        )


def run_saver_worker(config: dict[str, Any]) -> None:
    """Restore the newest checkpoint (or start at 0), then train and save every step."""
    import torch

    import trainhooks

    state = build_state(torch, config.get("marker_len", MARKER_LEN))
    directory = config["directory"]
    futures: list[Any] = []

    def save(step: int) -> None:
        if not config.get("async"):
            saver.save(state, directory, step)
            announce("saved", step)
            return
        future = saver.save_async(state, directory, step)
        future.add_done_callback(lambda f: f.exception() or announce("saved", step))
        futures.append(future)

    with trainhooks.Saver(max_to_keep=config["max_to_keep"]) as saver:
        try:
            step = saver.restore(state, directory).step
            check_restored(state, step)
            announce("start", step)
        except trainhooks.CheckpointNotFoundError:
            step = 0
            announce("start", step)
            save(step)
        for next_step in range(step + 1, config["last_step"] + 1):
            train_step(torch, state, next_step)
            save(next_step)
    for future in futures:
        future.result()  # a failed background save fails the worker
    announce("done", config["last_step"])


def run_session_worker(config: dict[str, Any]) -> None:
    """The same training through MonitoredTrainingSession with a step-1 CheckpointSaverHook."""
    import torch

    import trainhooks
    from trainhooks._store import _faults

    class Announcer(trainhooks.CheckpointSaverListener):
        def before_save(self, session: Any, global_step_value: int) -> None:
            _faults.fault_point("listener_before_save")

        def after_save(self, session: Any, global_step_value: int) -> None:
            _faults.fault_point("listener_after_save")
            announce("saved", global_step_value)

    class StartAnnouncer(trainhooks.SessionRunHook):
        def after_create_session(self, session: Any, coord: Any) -> None:
            check_restored(session.state, session.global_step)
            announce("start", session.global_step)

    state = build_state(torch, config.get("marker_len", MARKER_LEN))
    directory = config["directory"]
    saver_hook = trainhooks.CheckpointSaverHook(
        directory,
        save_steps=1,
        saver=trainhooks.Saver(max_to_keep=config["max_to_keep"]),
        listeners=[Announcer()],
        async_save=bool(config.get("async")),
    )
    with trainhooks.MonitoredTrainingSession(
        checkpoint_dir=directory,
        state=state,
        hooks=[trainhooks.StopAtStepHook(last_step=config["last_step"])],
        chief_only_hooks=[StartAnnouncer(), saver_hook],  # announce "start" before the save
        save_checkpoint_secs=None,
        save_checkpoint_steps=None,
        save_summaries_steps=None,
        log_step_count_steps=None,
    ) as session:
        while not session.should_stop():
            session.run(train_step, torch, state, session.global_step + 1)
        last = session.global_step
    announce("done", last)


def run_early_stop_worker(config: dict[str, Any]) -> None:
    """Train with an evaluator, an early stopper and a best-model exporter, resuming from
    ``directory``; with ``kill_at``, SIGKILL itself in the ``after_save`` of that step,
    before every listener (``kill_where="before"``) or after all of them ("after")."""
    import signal

    import torch

    import trainhooks

    state = build_state(torch, config.get("marker_len", MARKER_LEN))
    inputs = torch.randn(64, 8, generator=torch.Generator().manual_seed(10**6))
    targets = torch.randn(64, 2, generator=torch.Generator().manual_seed(10**6 + 1))

    def eval_fn(session: Any) -> dict[str, float]:
        with torch.no_grad():
            loss = torch.nn.functional.mse_loss(session.state["model"](inputs), targets)
        return {"loss": round(loss.item(), 4)}

    class Killer(trainhooks.CheckpointSaverListener):
        def after_save(self, session: Any, global_step_value: int) -> None:
            if global_step_value == config.get("kill_at"):
                os.kill(os.getpid(), signal.SIGKILL)

    evaluator = trainhooks.EvaluationListener(eval_fn, output_dir=config["eval_dir"])
    stopper = trainhooks.EarlyStoppingListener(
        "loss", patience=config["patience"], source=evaluator
    )
    exporter = trainhooks.BestCheckpointExporter(
        "loss", mode="min", keep=2, export_dir=config["export_dir"], source=evaluator, only="model"
    )
    listeners = [evaluator, stopper, exporter]
    listeners.insert(0 if config.get("kill_where") == "before" else len(listeners), Killer())
    directory = config["directory"]
    saver_hook = trainhooks.CheckpointSaverHook(
        directory, save_steps=config["save_steps"], listeners=listeners
    )
    with trainhooks.MonitoredTrainingSession(
        checkpoint_dir=directory,
        state=state,
        hooks=[trainhooks.StopAtStepHook(last_step=config["last_step"])],
        chief_only_hooks=[saver_hook],
        save_checkpoint_secs=None,
        save_summaries_steps=None,
        log_step_count_steps=None,
    ) as session:
        announce("start", session.global_step)
        while not session.should_stop():
            session.run(train_step, torch, state, session.global_step + 1)
        last = session.global_step
    announce("stopped", -1 if stopper.stopped_step is None else stopper.stopped_step)
    announce("done", last)


def run_worker(config: dict[str, Any]) -> None:
    """Run one worker as its config says (fault spec configured in-process if given)."""
    if config.get("faults") is not None:
        from trainhooks._store import _faults

        _faults.configure(config["faults"])
    if config["mode"] == "session":
        run_session_worker(config)
    elif config["mode"] == "early_stop":
        run_early_stop_worker(config)
    else:
        run_saver_worker(config)


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphaned trainers)."""
    import contextlib
    import ctypes
    import signal

    # not Linux: a killed test run may leave a worker behind
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def zygote() -> None:
    """Import everything once, then fork one worker per config line read on stdin."""
    die_with_parent()
    import torch

    torch.set_num_threads(1)  # no OpenMP pool exists at fork time; replays match bit for bit
    import trainhooks

    for name in ("Saver", "load", "CheckpointSaverListener", "SessionRunHook"):
        getattr(trainhooks, name)  # resolve lazily-imported modules before forking
    # Warm up once: the first optimizer and backward pull in lazy torch modules (~1 s).
    train_step(torch, build_state(torch, 1), 1)
    announce("ready", os.getpid())
    for line in sys.stdin:
        config = json.loads(line)
        pid = os.fork()
        if pid == 0:
            die_with_parent()
            os._exit(_worker_exit_code(config))
        announce("worker", pid)
        _, status = os.waitpid(pid, 0)
        announce("exit", f"{pid} {status}")


def _worker_exit_code(config: dict[str, Any]) -> int:
    try:
        run_worker(config)
    except BaseException:  # report any failure to the parent through stderr and the code
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--zygote"]:
        zygote()
        return 0
    import torch

    torch.set_num_threads(1)
    return _worker_exit_code(json.loads(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
