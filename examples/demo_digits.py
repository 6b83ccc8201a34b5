"""trainhooks demo: train a small PyTorch MLP on scikit-learn's digits, crash it, resume it.

What it shows, in about half a minute on two cores:

1. A training run (a child process) under ``MonitoredTrainingSession``: checkpoints every
   ``--save-every`` steps, an ``EvaluationListener`` printing held-out accuracy after each
   save, a ``BestCheckpointExporter`` keeping the two best checkpoints as standalone
   safetensors files, TensorBoard summaries, a progress bar.
2. The demo kills that process with SIGKILL midway, as an OOM killer or a preempted
   machine would, and restarts training on the same directory: the new run resumes from
   the latest committed checkpoint and runs only the steps that are left.
3. A table of what is on disk, and the final held-out accuracy.

Run it with ``make demo`` or ``python examples/demo_digits.py`` (``--help`` for options:
``--dir``, ``--steps``, ``--resume`` to continue an earlier run, ``--no-crash``,
``--async-save`` to checkpoint in the background: training waits only for a copy of the
state, and each evaluation is reported once its checkpoint is durable).
``--dir`` (or ``TRAINHOOKS_DEMO_DIR``) may be a URL such as ``s3://bucket/demo``: the
checkpoints and the best exports then go to object storage (credentials and endpoint from
the ``AWS_*`` environment variables), the summaries and evaluation log to ``--log-dir``.
The data order is a function of the step number and the optimizer state is checkpointed,
so a resumed run trains exactly as an uninterrupted one would.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SEED = 0
DEFAULT_DIR = "runs/demo"
TEST_SIZE = 360  # of the 1,797 bundled digit images, held out for evaluation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir",
        default=os.environ.get("TRAINHOOKS_DEMO_DIR") or DEFAULT_DIR,
        help="run directory, or a URL such as s3://bucket/demo (default: $TRAINHOOKS_DEMO_DIR, "
        f"else {DEFAULT_DIR})",
    )
    parser.add_argument(
        "--log-dir",
        default=None,
        help="summaries and evaluation log (default: the run directory; runs/demo-logs "
        "when it is a URL)",
    )
    parser.add_argument("--steps", type=int, default=600, help="training steps in total")
    parser.add_argument("--save-every", type=int, default=50, help="checkpoint interval")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--kill-at", type=int, default=None, help="step to SIGKILL the child at")
    parser.add_argument("--resume", action="store_true", help="continue the run in --dir")
    parser.add_argument("--no-crash", action="store_true", help="one plain run, no kill")
    parser.add_argument(
        "--async-save", action="store_true", help="save checkpoints in the background"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--report-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ack-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 2 * args.save_every:
        parser.error("--steps must be at least twice --save-every")
    if args.kill_at is None:
        args.kill_at = args.steps * 11 // 20 + args.save_every // 5  # past the middle
    if not 0 < args.kill_at < args.steps:
        parser.error("--kill-at must be between 0 and --steps")
    args.dir = (
        str(args.dir).rstrip("/") if is_url(args.dir) else Path(args.dir.removeprefix("file://"))
    )
    if args.log_dir is None:
        args.log_dir = "runs/demo-logs" if is_url(str(args.dir)) else args.dir
    args.log_dir = Path(args.log_dir)
    return args


def is_url(location: str) -> bool:
    """Object storage (``s3://...``); ``file://`` URLs and plain paths are local."""
    return "://" in location and not location.startswith("file://")


def child_dir(directory: str | Path, name: str) -> str | Path:
    """``directory/name`` for a path or a URL alike."""
    return f"{directory}/{name}" if isinstance(directory, str) else directory / name


# -- data and model -------------------------------------------------------------------


def load_data() -> tuple[Any, Any, Any, Any]:
    """The digits images scaled to [0, 1], split once with a fixed seed (no download)."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    order = np.random.default_rng(SEED).permutation(len(images))
    test, train = order[:TEST_SIZE], order[TEST_SIZE:]
    x = torch.from_numpy((images / 16.0).astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    return x[train], y[train], x[test], y[test]


def batch_indices(step: int, n: int, batch_size: int) -> Any:
    """The examples of batch ``step``: a pure function of the step, so resuming needs no
    data-loader state and replays exactly the batches an uninterrupted run would see."""
    import numpy as np

    epoch, i = divmod(step, n // batch_size)
    order = np.random.default_rng([SEED, epoch]).permutation(n)
    return order[i * batch_size : (i + 1) * batch_size]


def make_model() -> tuple[Any, Any]:
    import torch

    torch.manual_seed(SEED)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    return model, torch.optim.Adam(model.parameters(), lr=3e-3)


# -- training -------------------------------------------------------------------------


class ProgressHook:
    """A hook moving a rich progress bar (duck-typed: hooks need not subclass anything)."""

    def __init__(self, progress: Any, total: int) -> None:
        self.progress = progress
        self.task = progress.add_task("training", total=total, loss=float("nan"))

    def after_create_session(self, session: Any, coord: Any) -> None:
        self.progress.update(self.task, completed=session.global_step)

    def after_run(self, run_context: Any, run_values: Any) -> None:
        loss = run_values.step_result["loss"]
        self.progress.update(self.task, completed=run_context.session.global_step, loss=float(loss))


class ResumeReporter:
    """Says where training starts; placed before the saver hook so it speaks first."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.first_step = 0

    def after_create_session(self, session: Any, coord: Any) -> None:
        self.first_step = session.global_step
        if self.first_step:
            self.console.print(
                f"  [bold green]resumed from step {self.first_step}[/] (the latest committed "
                "checkpoint; its state, optimizer included, is restored)"
            )


class ParentLink:
    """Child side of the demo's kill switch: report each step, wait for the parent's go."""

    def __init__(self, report_fd: int, ack_fd: int) -> None:
        self.report = os.fdopen(report_fd, "wb", buffering=0)
        self.ack = os.fdopen(ack_fd, "rb", buffering=0)
        self.refresh: Any = None  # redraws the progress bar: the kill leaves it as it is

    def step_done(self, step: int) -> None:
        if self.refresh is not None:
            self.refresh()
        self.report.write(f"{step}\n".encode())
        self.ack.read(1)  # the parent answers, or kills us while we wait


def make_eval_fn(console: Any, model: Any, x_test: Any, y_test: Any) -> Any:
    """The evaluation run after each save: held-out accuracy and loss, printed."""
    import torch

    def evaluate(session: Any) -> dict[str, float]:
        with torch.no_grad():
            logits = model(x_test)
        accuracy = (logits.argmax(1) == y_test).float().mean().item()
        loss = torch.nn.functional.cross_entropy(logits, y_test).item()
        console.print(
            f"  step {session.global_step:>5}  checkpoint  held-out accuracy "
            f"[bold]{accuracy:.3f}[/]  (loss {loss:.3f})"
        )
        return {"accuracy": accuracy, "loss": loss}

    return evaluate


def make_progress(console: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        console=console,
    )


def train(args: argparse.Namespace, console: Any, link: ParentLink | None = None) -> dict:
    """Train to ``args.steps`` in ``args.dir``, resuming from its latest checkpoint."""
    import torch

    import trainhooks as th

    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = load_data()
    model, optimizer = make_model()
    state = {"model": model, "optimizer": optimizer, "rng": th.RNGState()}

    evaluate = make_eval_fn(console, model, x_test, y_test)
    evaluator = th.EvaluationListener(evaluate, output_dir=args.log_dir)
    exporter = th.BestCheckpointExporter(
        "accuracy",
        mode="max",
        keep=2,
        export_dir=child_dir(args.dir, "best"),
        source=evaluator,
        checkpoint_dir=args.dir,
    )
    saver_hook = th.CheckpointSaverHook(
        args.dir,
        save_steps=args.save_every,
        listeners=[evaluator, exporter],
        async_save=args.async_save,
    )

    def step() -> dict[str, Any]:
        index = batch_indices(session.global_step, len(x_train), args.batch_size)
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x_train[index]), y_train[index])
        loss.backward()
        optimizer.step()
        if link is not None:
            link.step_done(session.global_step + 1)
        return {"loss": loss.detach()}

    progress = make_progress(console)
    bar = ProgressHook(progress, args.steps)
    if link is not None:
        link.refresh = progress.refresh
    reporter = ResumeReporter(console)
    started = time.perf_counter()
    with (
        progress,
        th.MonitoredTrainingSession(
            checkpoint_dir=args.dir,
            summary_dir=args.log_dir,
            state=state,
            chief_only_hooks=[reporter, saver_hook],
            hooks=[th.StopAtStepHook(last_step=args.steps), th.NanTensorHook("loss"), bar],
            save_summaries_steps=10,
            log_step_count_steps=100,
        ) as session,
    ):
        first_step = reporter.first_step
        while not session.should_stop():
            session.run(step)
        last_step = session.global_step
    return {
        "first_step": first_step,
        "last_step": last_step,
        "seconds": time.perf_counter() - started,
        "evaluator": evaluator,
        "exporter": exporter,
        "model": model,
    }


def train_reference(args: argparse.Namespace) -> Any:
    """The same training as a plain loop that is never interrupted, for comparison."""
    import torch

    torch.set_num_threads(1)
    x_train, y_train, _, _ = load_data()
    model, optimizer = make_model()
    for step in range(args.steps):
        index = batch_indices(step, len(x_train), args.batch_size)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x_train[index]), y_train[index]).backward()
        optimizer.step()
    return model


def same_weights(a: Any, b: Any) -> bool:
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- the child run and its kill -------------------------------------------------------


def run_child_and_kill(args: argparse.Namespace, console: Any) -> int:
    """Start a training process, SIGKILL it at step ``args.kill_at``; return the last step
    it reported."""
    report_r, report_w = os.pipe()
    ack_r, ack_w = os.pipe()
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        f"--dir={args.dir}",
        f"--log-dir={args.log_dir}",
        f"--steps={args.steps}",
        f"--save-every={args.save_every}",
        f"--batch-size={args.batch_size}",
        f"--report-fd={report_w}",
        f"--ack-fd={ack_r}",
        *(["--async-save"] if args.async_save else []),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # a SIGKILL loses unflushed output
    sys.stdout.flush()  # our lines first, then the child's on the same stdout
    child = subprocess.Popen(command, pass_fds=(report_w, ack_r), env=env)
    os.close(report_w)
    os.close(ack_r)
    last = 0
    with os.fdopen(report_r, "rb") as reports, os.fdopen(ack_w, "wb", buffering=0) as acks:
        for line in reports:
            last = int(line)
            if last >= args.kill_at:
                os.kill(child.pid, signal.SIGKILL)
                break
            acks.write(b"k")
    code = child.wait()
    console.show_cursor(True)  # the killed process had no chance to restore the terminal
    if code != -signal.SIGKILL:
        raise SystemExit(f"the training process exited with code {code} before it was killed")
    console.print(
        f"\n  [bold red]killed the training process (pid {child.pid}) with SIGKILL[/] "
        f"in the middle of step {last} — no clean shutdown, no final save.\n"
    )
    return last


# -- reporting ------------------------------------------------------------------------


def show_disk(args: argparse.Namespace, console: Any, title: str) -> None:
    """A table of the committed checkpoints and the best exports in the run directory."""
    import json

    from rich.table import Table

    import trainhooks as th

    accuracy: dict[int, float] = {}
    jsonl = args.log_dir / "eval.jsonl"
    if jsonl.exists():
        for line in jsonl.read_text().splitlines():
            record = json.loads(line)
            accuracy[record["step"]] = record["metrics"]["accuracy"]
    table = Table(title=title, title_justify="left")
    for column in ("path", "step", "size", "accuracy"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for info in th.list_checkpoints(args.dir):
        acc = accuracy.get(info.step)
        table.add_row(
            info.path.name,
            str(info.step),
            f"{info.nbytes / 1024:.1f} KiB",
            "-" if acc is None else f"{acc:.3f}",
        )
    for meta, size in best_exports(child_dir(args.dir, "best")):
        table.add_row(
            f"best/{meta['safetensors']}",
            str(meta["step"]),
            f"{size / 1024:.1f} KiB",
            f"{meta['value']:.3f}",
        )
    console.print(table)


def best_exports(best_dir: str | Path) -> list[tuple[dict[str, Any], int]]:
    """Each committed best export (its JSON) and its tensor file's size, by step."""
    import json

    if isinstance(best_dir, Path):
        files = {p.name: p.stat().st_size for p in best_dir.glob("best-*")}
        read = lambda name: (best_dir / name).read_bytes()  # noqa: E731
    else:
        import fsspec

        fs, root = fsspec.core.url_to_fs(best_dir, use_listings_cache=False)
        found = fs.find(root, detail=True, refresh=True) if fs.exists(root) else {}
        files = {path.rsplit("/", 1)[1]: info["size"] for path, info in found.items()}
        read = lambda name: fs.cat_file(f"{root}/{name}")  # noqa: E731
    exports = []
    for name in sorted(n for n in files if n.endswith(".json")):
        meta = json.loads(read(name))
        if meta["safetensors"] in files:
            exports.append((meta, files[meta["safetensors"]]))
    return exports


def prepare_directory(args: argparse.Namespace) -> None:
    """Start fresh unless ``--resume``; refuse to delete a directory the demo did not make."""
    if args.resume:
        return
    ours = {".trainhooks.lock", ".trainhooks.lease", "best", "eval", "eval.jsonl"}
    for directory in dict.fromkeys([args.dir, args.log_dir]):
        names, remove = list_top(directory)
        foreign = [
            name
            for name in names
            if name not in ours
            and not name.startswith(("ckpt-", "events.out.tfevents.", "timeline-"))
        ]
        if foreign:
            raise SystemExit(
                f"{directory} holds files the demo did not write "
                f"({', '.join(sorted(foreign)[:3])}); pass another --dir, or --resume to "
                "continue a run there"
            )
        if names:
            remove()


def list_top(directory: str | Path) -> tuple[list[str], Any]:
    """The names directly in a directory (or under a URL prefix), and how to delete it."""
    if isinstance(directory, Path):
        if not directory.exists():
            return [], None
        return [p.name for p in directory.iterdir()], lambda: shutil.rmtree(directory)
    import fsspec

    fs, root = fsspec.core.url_to_fs(directory, use_listings_cache=False)
    paths = list(fs.find(root, refresh=True)) if fs.exists(root) else []
    names = sorted({p[len(root) + 1 :].split("/", 1)[0] for p in paths})
    return names, lambda: fs.rm(paths)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from rich.console import Console

    console = Console(highlight=False)
    if args.child:
        link = None
        if args.report_fd is not None and args.ack_fd is not None:
            link = ParentLink(args.report_fd, args.ack_fd)
        train(args, console, link)
        return

    started = time.perf_counter()
    prepare_directory(args)
    console.rule("[bold]trainhooks demo: an MLP on scikit-learn's digits")
    if args.resume or args.no_crash:
        console.print(f"Training in {args.dir} to step {args.steps}.")
        result = train(args, console)
    else:
        console.print(
            f"[bold]1.[/] A training process: {args.steps} steps, a checkpoint every "
            f"{args.save_every} steps, evaluated after each save. It will be killed at "
            f"step {args.kill_at}."
        )
        killed_at = run_child_and_kill(args, console)
        show_disk(args, console, "On disk after the kill")
        console.print(
            "\n[bold]2.[/] The same command again, on the same directory (what a job "
            "scheduler does after a crash):"
        )
        result = train(args, console)
        first = result["first_step"]
        console.print(
            f"  this run ran steps {first + 1}–{result['last_step']} only: steps 1–{first} "
            f"were restored, not repeated; steps {first + 1}–{killed_at} had not been "
            "checkpointed when the first process died, so they were run again."
        )
        identical = same_weights(result["model"], train_reference(args))
        console.print(
            "  final weights bit-identical to a run that was never interrupted: "
            + ("[bold green]yes[/]" if identical else "[bold red]NO[/]")
        )
    console.print()
    show_disk(args, console, f"On disk in {args.dir}")
    final = result["evaluator"].history.get(result["last_step"]) or {}
    accuracy = final.get("accuracy", float("nan"))
    best = result["exporter"].best
    console.print(
        f"\nfinal held-out accuracy at step {result['last_step']}: [bold]{accuracy:.3f}[/] "
        f"(chance is 0.100); best exported: "
        + ", ".join(f"step {e.step} ({e.value:.3f})" for e in best)
    )
    console.print(
        f"TensorBoard: tensorboard --logdir {args.log_dir}   "
        f"total demo time {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
