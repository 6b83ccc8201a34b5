"""Child process of the preemption tests: ``child_train``'s model, trained through
``MonitoredTrainingSession`` with its default SIGTERM handling.

``python preempt_child.py '<json config>'``. Config keys: ``directory``, ``last_step``,
``save_steps``, ``pause_at`` (optional: the step during which the child stops and waits
for one line on stdin, so that the parent can signal it in the middle of that step) and
``faults`` (optional: a ``TRAINHOOKS_FAULTS`` spec configured in-process).

It reports on stdout, one unbuffered line per event, each with ``time.monotonic()`` (one
clock for every process of the machine) so that the parent can measure the time from its
signal to the durable checkpoint: ``start <step> <t>`` once restored, ``step <step> <t>``
when a step begins, ``paused <step> <t>`` while it waits, ``saving <step> <t>`` and
``saved <step> <t>`` around each save (``saved`` once it is durable), ``done <step> <t>``
at a normal end. A preempted child exits with ``EXIT_PREEMPTED``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from _support import child_train as child


def announce(event: str, step: int) -> None:
    child.announce(event, f"{step} {time.monotonic():.6f}")


def main(config: dict[str, Any]) -> None:
    import torch

    import trainhooks as th

    torch.set_num_threads(1)
    if config.get("faults"):
        from trainhooks._store import _faults

        _faults.configure(config["faults"])

    class Announcer(th.CheckpointSaverListener):
        def before_save(self, session: Any, global_step_value: int) -> None:
            announce("saving", global_step_value)

        def after_save(self, session: Any, global_step_value: int) -> None:
            announce("saved", global_step_value)

    class StartAnnouncer(th.SessionRunHook):
        def after_create_session(self, session: Any, coord: Any) -> None:
            child.check_restored(session.state, session.global_step)
            announce("start", session.global_step)

    state = child.build_state(torch)
    pause_at = config.get("pause_at")

    def step(number: int) -> dict[str, float]:
        announce("step", number)
        if number == pause_at:
            announce("paused", number)
            sys.stdin.readline()  # the parent signals us now, then lets the step go on
        return child.train_step(torch, state, number)

    directory = config["directory"]
    saver = th.CheckpointSaverHook(
        directory, save_steps=config["save_steps"], listeners=[Announcer()]
    )
    with th.MonitoredTrainingSession(
        checkpoint_dir=directory,
        state=state,
        chief_only_hooks=[StartAnnouncer(), saver],
        hooks=[th.StopAtStepHook(last_step=config["last_step"])],
        save_summaries_steps=None,
        log_step_count_steps=None,
    ) as session:
        while not session.should_stop():
            session.run(step, session.global_step + 1)
    announce("done", session.global_step)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
