"""Per-step overhead of ``sess.run`` with the three standard hooks, against a bare loop.

Measures, side by side in one process with interleaved repetitions:

* bare:       ``for _ in range(n): step()`` — the same no-op step with no session;
* trainhooks: ``while not sess.should_stop(): sess.run(step)`` with ``StopAtStepHook`` +
  ``StepCounterHook`` (default 100 steps) + ``CheckpointSaverHook`` (not triggering:
  a huge ``save_steps``; the save at creation and at the end are outside the timing);
* default session: ``MonitoredTrainingSession(checkpoint_dir=...)`` with its default
  hooks (step counter, checkpoint saver not triggering, and the resume check) plus
  ``StopAtStepHook``, once with ``resume_check=False`` and once with it on (the default);
  the difference is the resume check's per-step cost outside its windows;
* TensorFlow: ``MonitoredTrainingSession`` with the same three hooks around a no-op
  train op, when ``tensorflow`` is importable.

Prints the median µs/step of each, the overhead over bare and the ratio. Target for
trainhooks: ≤ 3 µs/step of overhead.

    python benchmarks/step_overhead.py [--steps 200000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import tempfile
import time
from collections.abc import Callable

from trainhooks import (
    CheckpointSaverHook,
    MonitoredSession,
    MonitoredTrainingSession,
    StepCounterHook,
    StopAtStepHook,
)


def no_op_step() -> None:
    return None


def time_bare(steps: int) -> float:
    step = no_op_step
    start = time.perf_counter_ns()
    for _ in range(steps):
        step()
    return (time.perf_counter_ns() - start) / steps / 1000


def time_trainhooks(steps: int, directory: str) -> float:
    hooks = [
        StopAtStepHook(num_steps=steps),
        StepCounterHook(),
        CheckpointSaverHook(directory, save_steps=10**12),
    ]
    step = no_op_step
    with MonitoredSession(hooks=hooks, state={}, checkpoint_dir=directory) as sess:
        start = time.perf_counter_ns()
        while not sess.should_stop():
            sess.run(step)
        elapsed = time.perf_counter_ns() - start
    return elapsed / steps / 1000


def time_default_session(steps: int, directory: str, *, resume_check: bool) -> float:
    step = no_op_step
    with MonitoredTrainingSession(
        checkpoint_dir=directory,
        state={},
        hooks=[StopAtStepHook(num_steps=steps)],
        save_checkpoint_secs=None,
        save_checkpoint_steps=10**12,
        save_summaries_steps=None,
        resume_check=resume_check,
    ) as sess:
        start = time.perf_counter_ns()
        while not sess.should_stop():
            sess.run(step)
        elapsed = time.perf_counter_ns() - start
    return elapsed / steps / 1000


def make_tensorflow_timer(directory: str) -> Callable[[int], float]:
    import tensorflow.compat.v1 as tf  # type: ignore[import-not-found]

    tf.disable_eager_execution()

    def time_tensorflow(steps: int) -> float:
        tf.reset_default_graph()
        global_step = tf.train.get_or_create_global_step()
        train_op = tf.assign_add(global_step, 1)
        hooks = [
            tf.train.StopAtStepHook(num_steps=steps),
            tf.train.StepCounterHook(every_n_steps=100, output_dir=directory),
            tf.train.CheckpointSaverHook(directory, save_steps=10**12),
        ]
        with tf.train.MonitoredTrainingSession(
            hooks=hooks, save_checkpoint_secs=None, save_summaries_steps=None
        ) as sess:
            start = time.perf_counter_ns()
            while not sess.should_stop():
                sess.run(train_op)
            elapsed = time.perf_counter_ns() - start
        return elapsed / steps / 1000

    return time_tensorflow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200_000, help="steps per repetition")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repetitions")
    parser.add_argument("--tf-steps", type=int, default=5_000, help="steps per TF repetition")
    args = parser.parse_args()
    logging.getLogger("trainhooks").setLevel(logging.ERROR)  # each fresh run warns: no checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        tf_timer = None
        if importlib.util.find_spec("tensorflow") is not None:
            tf_timer = make_tensorflow_timer(f"{tmp}/tf")
        bare, ours, theirs, unchecked, checked = [], [], [], [], []
        for repeat in range(args.repeats):
            bare.append(time_bare(args.steps))
            ours.append(time_trainhooks(args.steps, f"{tmp}/th{repeat}"))
            unchecked.append(
                time_default_session(args.steps, f"{tmp}/off{repeat}", resume_check=False)
            )
            checked.append(time_default_session(args.steps, f"{tmp}/on{repeat}", resume_check=True))
            if tf_timer is not None:
                theirs.append(tf_timer(args.tf_steps))

    bare_us, ours_us = statistics.median(bare), statistics.median(ours)
    overhead = ours_us - bare_us
    print(f"steps/repetition {args.steps}, repetitions {args.repeats} (medians)")
    print(f"bare loop            {bare_us:8.3f} µs/step")
    print(f"trainhooks sess.run  {ours_us:8.3f} µs/step   ratio to bare {ours_us / bare_us:6.1f}x")
    verdict = "within" if overhead <= 3.0 else "ABOVE"
    print(f"trainhooks overhead  {overhead:8.3f} µs/step   ({verdict} the 3 µs target)")
    off_us, on_us = statistics.median(unchecked), statistics.median(checked)
    print(f"default session      {off_us:8.3f} µs/step   (resume_check=False)")
    print(f"default session      {on_us:8.3f} µs/step   (resume check on)")
    print(f"resume check cost    {on_us - off_us:8.3f} µs/step")
    if theirs:
        tf_us = statistics.median(theirs)
        print(f"TensorFlow MTS       {tf_us:8.3f} µs/step   {tf_us / ours_us:6.1f}x trainhooks")
    else:
        print("TensorFlow           not installed; not measured")


if __name__ == "__main__":
    main()
