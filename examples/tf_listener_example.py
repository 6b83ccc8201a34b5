"""TensorFlow's ``CheckpointSaverListener`` documentation example, running on trainhooks.

The listener below is the example from TF's API documentation, unchanged. What differs
from the TF program is the import line, plus two things TF's snippet leaves as ``...``:
the training step (here a tiny NumPy linear regression) and ``save_steps=`` — TF's own
``CheckpointSaverHook(checkpoint_dir, listeners=[listener])`` raises ``ValueError`` in TF
as well, because a save interval is required.

    python examples/tf_listener_example.py [--async-save] [CHECKPOINT_DIR]

``--async-save`` saves in the background (``async_save=True``): the listener's calls come
in the same order, but each ``after_save`` runs once its checkpoint is durable, at a later
step boundary (at the latest when the next save is due). This listener decides from the
latest loss, so training stops at step 40 as before, or a few steps later with one more
save, depending on how long the writes took.
"""

from __future__ import annotations

import sys
import tempfile

import numpy as np

# TF: import tensorflow as tf  (tf.estimator.CheckpointSaverListener, ...)
from trainhooks import (
    CheckpointSaverHook,
    CheckpointSaverListener,
    MonitoredTrainingSession,
    StopAtStepHook,
)

# -- a tiny model: fit y = 3x + 1 by gradient descent ----------------------------------------
rng = np.random.default_rng(0)
x = rng.normal(size=(256, 1)).astype(np.float32)
y = 3.0 * x + 1.0
params = {"w": np.zeros((1, 1), np.float32), "b": np.zeros(1, np.float32)}
losses: list[float] = []


def train_step(learning_rate: float = 0.1) -> dict[str, float]:
    error = x @ params["w"] + params["b"] - y
    params["w"] -= learning_rate * 2 * (x.T @ error) / len(x)
    params["b"] -= learning_rate * 2 * error.mean(axis=0)
    losses.append(float((error**2).mean()))
    return {"loss": losses[-1]}


def decided_to_stop_training() -> bool:
    return bool(losses) and losses[-1] < 1e-6


# -- TF's documentation example, unchanged ----------------------------------------------------
class ExampleCheckpointSaverListener(CheckpointSaverListener):
    def begin(self):
        # You can add ops to the graph here.
        print("Starting the session.")
        self.your_tensor = ...

    def before_save(self, session, global_step_value):
        print("About to write a checkpoint")

    def after_save(self, session, global_step_value):
        print("Done writing checkpoint.")
        if decided_to_stop_training():
            return True

    def end(self, session, global_step_value):
        print("Done with the session.")


def main(checkpoint_dir: str, async_save: bool = False) -> None:
    listener = ExampleCheckpointSaverListener()
    saver_hook = CheckpointSaverHook(
        checkpoint_dir, save_steps=20, listeners=[listener], async_save=async_save
    )
    with MonitoredTrainingSession(
        chief_only_hooks=[saver_hook], hooks=[StopAtStepHook(last_step=200)], state=params
    ) as sess:
        while not sess.should_stop():
            sess.run(train_step)
    print(f"global step {sess.global_step}, loss {losses[-1]:.2e}, w={params['w'].item():.3f}")


if __name__ == "__main__":
    args = sys.argv[1:]
    background = "--async-save" in args
    paths = [arg for arg in args if arg != "--async-save"]
    if paths:
        main(paths[0], background)
    else:
        with tempfile.TemporaryDirectory() as directory:
            main(directory, background)
