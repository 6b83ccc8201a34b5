"""A preemptible training job: SIGTERM → save → exit status 75 → the relaunch resumes.

A scheduler that takes the machine back (SLURM preemption, a Kubernetes eviction, a spot
instance reclaimed) sends SIGTERM and, a grace period later, SIGKILL.
``MonitoredTrainingSession`` with a ``checkpoint_dir`` handles SIGTERM: the running step
finishes, the step is saved, every hook ends, and the session raises ``th.Preempted``, a
``SystemExit`` whose status is ``th.EXIT_PREEMPTED`` (75). Tell the scheduler to requeue
on 75 (docs/preemption.md shows how) and run the same command again: the job resumes from
the step it saved, with the same batches it would have seen, and ends with the same
weights as a job that was never interrupted.

The batch of each step is a function of the seed and the step (docs/porting.md), so
nothing about the data needs saving.

Run it, then preempt it from another shell and run it again::

    python examples/preemptible_job.py --dir /tmp/job &
    kill -TERM %1; wait %1; echo "exit status $?"       # 75
    python examples/preemptible_job.py --dir /tmp/job   # resumes from the saved step

On SLURM, ``#SBATCH --signal=B:USR1@120`` asks for SIGUSR1 two minutes before the end of
the time limit: pass ``--signal USR1`` to handle it as well.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import torch

import trainhooks as th

SEED, BATCH = 0, 32


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples of the step after ``step`` steps: a pure function of SEED and step."""
    generator = torch.Generator().manual_seed(SEED * 1_000_003 + step)
    x = torch.randn(BATCH, 8, generator=generator)
    y = torch.sin(x.sum(dim=1, keepdim=True)) + 0.05 * torch.randn(BATCH, 1, generator=generator)
    return x, y


def build_state() -> dict[str, Any]:
    torch.manual_seed(SEED)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    return {"model": model, "optimizer": optimizer}


def train_step(state: dict[str, Any], x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    loss = torch.nn.functional.mse_loss(state["model"](x), y)
    state["optimizer"].zero_grad()
    loss.backward()
    state["optimizer"].step()
    return {"loss": loss.item()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="checkpoint directory")
    parser.add_argument("--steps", type=int, default=4000, help="train until this step")
    parser.add_argument("--save-every", type=int, default=500, help="periodic saves (steps)")
    parser.add_argument("--log-every", type=int, default=500, help="print the loss every N")
    parser.add_argument(
        "--signal",
        action="append",
        default=[],
        choices=["USR1", "USR2"],
        help="also treat SIGUSR1/SIGUSR2 as a preemption (SIGTERM always is)",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # a model this small trains fastest on one thread
    state = build_state()
    signals = [signal.SIGTERM, *(getattr(signal, f"SIG{name}") for name in args.signal)]
    try:
        with th.MonitoredTrainingSession(
            checkpoint_dir=args.dir,
            state=state,
            hooks=[th.StopAtStepHook(last_step=args.steps)],
            save_checkpoint_steps=args.save_every,
            save_summaries_steps=None,
            log_step_count_steps=None,
            preemption_signals=signals,
        ) as sess:
            print(f"started at step {sess.global_step}", flush=True)
            while not sess.should_stop():
                result = sess.run(train_step, state, *batch(sess.global_step))
                if sess.global_step % args.log_every == 0:
                    print(f"step {sess.global_step} loss {result['loss']:.6f}", flush=True)
    except th.Preempted as preempted:
        # The checkpoint of this step is durable; say so, then exit with status 75.
        print(
            f"preempted at step {preempted.step}: checkpoint saved in {args.dir}; "
            f"exiting with status {preempted.code} so that the scheduler requeues the job",
            flush=True,
        )
        raise
    print(f"finished at step {sess.global_step}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
