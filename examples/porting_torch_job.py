"""A realistic PyTorch training job on trainhooks: kill it anywhere, run it again, and it
ends bit for bit where an uninterrupted run ends.

The job: an MLP with dropout, AdamW, a cosine learning-rate schedule, a gradient scaler,
a shuffled ``StatefulDataLoader``, an evaluation after every checkpoint, early stopping on
the validation loss and an export of the two most accurate checkpoints. Besides its
listeners, the only lines about trainhooks are the ``state`` dict and the session
(docs/porting.md).

    python examples/porting_torch_job.py --dir runs/torch-job
    python examples/porting_torch_job.py --dir runs/torch-job --kill-at-step 25  # dies
    python examples/porting_torch_job.py --dir runs/torch-job  # resumes at step 20

``--kill-at-step N`` SIGKILLs the process right after step N, as a preemption or the OOM
killer would; a second run with the same ``--dir`` resumes from the newest checkpoint.
``--leave-out NAME`` drops an entry from ``state`` (``scheduler``, ``loader``, ...) to see
the resume check report what a resume without it gets wrong. Each step prints
``step <n> loss <loss> batch <example indices>``; torchdata is needed
(``pip install torchdata``).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import RandomSampler

import trainhooks as th

SEED = 0
FEATURES, CLASSES = 16, 4
TRAIN_SIZE, VAL_SIZE, BATCH_SIZE = 600, 256, 32  # 19 batches an epoch, the last one short
STATE_NAMES = ["model", "optimizer", "scheduler", "scaler", "loader", "rng"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("runs/torch-job"))
    parser.add_argument("--steps", type=int, default=150, help="last step, if not stopped early")
    parser.add_argument("--save-every", type=int, default=10)
    parser.add_argument("--num-workers", type=int, default=0, help="data loader processes")
    parser.add_argument("--kill-at-step", type=int, default=None, help="SIGKILL after it")
    parser.add_argument(
        "--leave-out", action="append", default=[], choices=STATE_NAMES, help="drop from state"
    )
    return parser.parse_args()


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Examples labelled by a random linear teacher, with some label noise."""
    generator = torch.Generator().manual_seed(SEED)
    features = torch.randn(TRAIN_SIZE + VAL_SIZE, FEATURES, generator=generator)
    teacher = torch.randn(FEATURES, CLASSES, generator=generator)
    noise = 0.5 * torch.randn(TRAIN_SIZE + VAL_SIZE, CLASSES, generator=generator)
    return features, (features @ teacher + noise).argmax(dim=1)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    random.seed(SEED)  # every global generator, as a reproducible job does
    np.random.seed(SEED)
    torch.manual_seed(SEED)  # the initial weights and the dropout masks

    features, labels = make_data()
    train_set = torch.utils.data.TensorDataset(
        torch.arange(TRAIN_SIZE), features[:TRAIN_SIZE], labels[:TRAIN_SIZE]
    )
    val_x, val_y = features[TRAIN_SIZE:], labels[TRAIN_SIZE:]
    loader = StatefulDataLoader(  # two generators, one job each (docs/porting.md)
        train_set,
        batch_size=BATCH_SIZE,
        sampler=RandomSampler(train_set, generator=torch.Generator().manual_seed(SEED)),
        generator=torch.Generator().manual_seed(SEED + 1),
        num_workers=args.num_workers,
    )
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 64),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(64, CLASSES),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)
    # On a GPU: GradScaler("cuda") around autocast(fp16). On the CPU it runs in float32,
    # where scaling and unscaling by powers of two change no bit, but its state still counts.
    scaler = torch.amp.GradScaler("cpu")

    def train_step(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        return {"loss": loss.item()}

    @torch.no_grad()
    def evaluate(session: th.HookSession) -> dict[str, float]:
        model.eval()  # no dropout, so no random numbers drawn
        logits = model(val_x)
        model.train()
        accuracy = (logits.argmax(dim=1) == val_y).float().mean()
        return {"loss": F.cross_entropy(logits, val_y).item(), "accuracy": accuracy.item()}

    evaluator = th.EvaluationListener(evaluate)
    listeners = [
        evaluator,
        th.BestCheckpointExporter(
            "accuracy", mode="max", keep=2, export_dir=args.dir / "best", source=evaluator
        ),
        th.EarlyStoppingListener("loss", patience=3, min_delta=1e-2, source=evaluator),
    ]
    state = {
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "scaler": scaler,
        "loader": loader,
        "rng": th.RNGState(),
    }
    for name in args.leave_out:  # to see the resume check at work
        del state[name]

    with th.MonitoredTrainingSession(
        checkpoint_dir=args.dir,  # resumes from its newest checkpoint, if there is one
        state=state,
        save_checkpoint_secs=None,  # the saver hook below, with the listeners
        chief_only_hooks=[
            th.CheckpointSaverHook(args.dir, save_steps=args.save_every, listeners=listeners)
        ],
        hooks=[th.StopAtStepHook(last_step=args.steps)],
    ) as session:
        while not session.should_stop():
            for index, x, y in loader:  # a new iterator after a restore resumes mid-epoch
                result = session.run(train_step, x, y)
                step = session.global_step
                print(f"step {step} loss {result['loss']!r} batch {index.tolist()}", flush=True)
                if step == args.kill_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)  # a preemption, right after step
                if session.should_stop():
                    break
        print(f"done {session.global_step}", flush=True)


if __name__ == "__main__":
    main()
