"""One Ray Train job (``TorchTrainer``, 2 CPU workers, gloo) checkpointing through trainhooks.

    pip install -e '.[ray]'
    python examples/ray_train.py /shared/run --until 8    # trains steps 1-8, saves at 4 and 8
    python examples/ray_train.py /shared/run --until 16   # resumes from step 8
    trainhooks verify /shared/run/checkpoints

``/shared/run`` must be one directory every worker sees (one machine here; NFS or similar
on a real cluster). trainhooks writes its checkpoints to ``/shared/run/checkpoints``; Ray
keeps its run state in ``/shared/run/ray``.

Ray starts the processes and the gloo process group; inside the train loop it is ordinary
``torch.distributed`` code, so trainhooks' collective save works unchanged: every worker
calls ``save_sharded`` and writes its own shard (DCP writes replicated values once), the
coordinator commits atomically, and every worker gets the same ``CheckpointInfo`` back.
(The distributed ``MonitoredTrainingSession`` is not in this branch yet; once it is, the
loop can use it and its ``CheckpointSaverHook`` instead of calling ``save_sharded``.)

How this relates to Ray's own checkpoints: the trainhooks directory is the durable store
and the authority on where to resume. A ``ray.train.report`` checkpoint is a directory Ray
copies into its storage; copying every shard there would store each checkpoint twice and
put it under Ray's retention (``CheckpointConfig.num_to_keep`` deletes it). So rank 0
reports a small *pointer* checkpoint instead: one JSON file naming the committed trainhooks
checkpoint, which ``Result.checkpoint`` hands back to the driver. On (re)start the loop
asks trainhooks for the newest checkpoint rather than ``ray.train.get_checkpoint()``: a
pointer can lag (a crash between the commit and the report) or name a checkpoint that is
gone, while ``latest_checkpoint`` offers only committed ones whose structure checks out.
Ray's own worker restarts (``FailureConfig(max_failures=...)``) run this loop again too.

The last line printed is ``RESULT {json}`` (step, loss, a digest of the weights, the
pointer's path), which the opt-in test ``tests/dist/test_ray_train.py`` reads.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

import trainhooks

POINTER = "trainhooks-checkpoint.json"


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))


def digest(model: torch.nn.Module) -> str:
    """A short hash of the weights, to compare a resumed run with an uninterrupted one."""
    import hashlib

    h = hashlib.sha256()
    for tensor in model.state_dict().values():
        h.update(tensor.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def report_pointer(metrics: dict[str, Any], path: str, step: int) -> None:
    """Every worker reports (Ray's report is a barrier); rank 0 attaches a pointer to the
    committed trainhooks checkpoint ``path`` (``Result.metrics`` are those of the last
    report that carried a checkpoint)."""
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as pointer_dir:
        record = {"path": path, "step": step}
        (Path(pointer_dir) / POINTER).write_text(json.dumps(record))
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(pointer_dir))


def train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray worker, inside the process group Ray has set up."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from trainhooks.distributed import load_sharded, save_sharded

    directory, until, save_every = config["directory"], config["until"], config["save_every"]
    rank, world = dist.get_rank(), dist.get_world_size()
    model = ray.train.torch.prepare_model(make_model())  # DDP: replicated weights
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    step = 0

    def train_one() -> float:
        seed = step * world + rank  # each rank's batch is a function of the step: exact resume
        x = torch.randn(16, 32, generator=torch.Generator().manual_seed(seed))
        loss = model(x).pow(2).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        return float(loss.item())

    # Rank 0 picks the checkpoint and tells the others, so all load the same one.
    choice: list[Any] = [None]
    if rank == 0:
        latest = trainhooks.latest_checkpoint(directory)
        choice[0] = None if latest is None else (str(latest.path), latest.step)
    dist.broadcast_object_list(choice, src=0)
    if choice[0] is not None:
        path, step = choice[0]
        train_one()  # creates Adam's state, so the load has targets for it (then replaced)
        model_sd, optim_sd = get_state_dict(model, optim)
        load_sharded({"model": model_sd, "optim": optim_sd}, path)
        set_state_dict(model, optim, model_state_dict=model_sd, optim_state_dict=optim_sd)
    resumed_from, loss = step, float("nan")

    def progress() -> dict[str, Any]:  # what the driver gets back as Result.metrics
        weights = digest(getattr(model, "module", model))
        return {"step": step, "loss": loss, "resumed_from": resumed_from, "digest": weights}

    while step < until:
        loss = train_one()
        step += 1
        if step % save_every == 0 or step == until:
            model_sd, optim_sd = get_state_dict(model, optim)
            info = save_sharded({"model": model_sd, "optim": optim_sd}, directory, step)
            report_pointer(progress(), str(info.path), info.step)
    if choice[0] is not None and resumed_from >= until:  # nothing to train: say where it is
        report_pointer(progress(), *choice[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="shared directory (checkpoints/ and ray/)")
    parser.add_argument("--until", type=int, default=8, help="train until this global step")
    parser.add_argument("--save-every", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    run = args.run.resolve()
    directory = run / "checkpoints"
    directory.mkdir(parents=True, exist_ok=True)

    # A private local cluster (never an existing one), sized for this small job.
    ray.init(
        address="local",
        num_cpus=args.workers,
        include_dashboard=False,
        object_store_memory=256 * 1024 * 1024,
        # Ray's workers log at INFO; its state-API monitor warns every second when the
        # dashboard (ray[default]) is not installed. Errors still reach the console.
        logging_config=ray.LoggingConfig(log_level="ERROR"),
    )
    try:
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={
                "directory": str(directory),
                "until": args.until,
                "save_every": args.save_every,
            },
            torch_config=TorchConfig(backend="gloo"),
            scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=False),
            run_config=RunConfig(
                name="trainhooks-ray",
                storage_path=str(run / "ray"),
                checkpoint_config=CheckpointConfig(num_to_keep=2),  # pointers only
            ),
        )
        result = trainer.fit()
    finally:
        ray.shutdown()

    metrics = dict(result.metrics or {})
    pointer = None
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as pointer_dir:
            pointer = json.loads((Path(pointer_dir) / POINTER).read_text())
    print(
        f"resumed from step {metrics.get('resumed_from')}, trained to step "
        f"{metrics.get('step')}, loss {metrics.get('loss', float('nan')):.4f}"
    )
    print(f"newest trainhooks checkpoint: {trainhooks.latest_checkpoint(directory)}")
    print("RESULT " + json.dumps({**metrics, "pointer": pointer}))


if __name__ == "__main__":
    main()
