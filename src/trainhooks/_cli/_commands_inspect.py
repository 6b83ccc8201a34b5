"""``trainhooks ls`` and ``trainhooks show``: what checkpoints exist and what is in one."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from trainhooks._cli._errors import CliError
from trainhooks._cli._places import Place, resolved
from trainhooks._cli._render import (
    age,
    emit_json,
    human_bytes,
    info_json,
    json_option,
    local_time,
    make_table,
    note,
    plural,
    shape_text,
    short_repr,
    stdout_console,
)
from trainhooks._cli._resolve import (
    Resolved,
    basename_for,
    candidates_in,
    checkpoints_in,
    newest_in,
    no_checkpoints_error,
    reading,
    resolve_checkpoint,
    resolve_run_directory,
)
from trainhooks._cli._tree import (
    SEPARATOR,
    entry_json,
    find_leaf,
    flatten,
    is_tensor,
    tensor_stats,
)
from trainhooks._saver import load_outline

if TYPE_CHECKING:
    from trainhooks import CheckpointInfo


@click.command("ls")
@click.argument("directory", metavar="DIR")
@json_option
def ls(directory: str, as_json: bool) -> int:
    """List the committed checkpoints in DIR, oldest first.

    Staging and half-deleted entries are never listed, nor are damaged checkpoints
    (`trainhooks verify DIR` reports those).
    """
    path = resolve_run_directory(directory, allow_checkpoint=True)
    infos = checkpoints_in(path)
    if not infos:
        raise no_checkpoints_error(directory)
    newest = newest_in(path, infos).step
    _note_unlisted(path, infos)
    if as_json:
        emit_json([info_json(info, newest=info.step == newest) for info in infos])
        return 0
    now = time.time()
    table = make_table(
        f"{plural(len(infos), 'checkpoint')} in {path}",
        ("name", "left"),
        ("step", "right"),
        ("saved", "left"),
        ("age", "right"),
        ("size", "right"),
        ("tensors", "right"),
        ("", "left"),
    )
    for info in infos:
        table.add_row(
            Text(info.path.name),
            str(info.step),
            local_time(info.time),
            age(info.time, now),
            human_bytes(info.nbytes),
            str(info.num_tensors),
            Text("newest", style="bold green") if info.step == newest else "",
        )
    total = sum(info.nbytes for info in infos)
    table.caption = f"total {human_bytes(total)}"
    table.caption_justify = "left"
    stdout_console().print(table)
    return 0


def _note_unlisted(path: Place, infos: list[CheckpointInfo]) -> None:
    """Say on stderr which checkpoint directories ``ls`` leaves out as damaged."""
    listed = {resolved(info.path) for info in infos}
    unlisted = [
        p.name for p in candidates_in(path).get(basename_for(path), []) if resolved(p) not in listed
    ]
    if unlisted:
        note(
            f"not listed, damaged or incomplete: {', '.join(unlisted)} "
            f"(`trainhooks verify {path}` says why)"
        )


@click.command("show")
@click.argument("checkpoint", metavar="CKPT")
@click.option(
    "--tensor",
    "tensor_name",
    metavar="NAME",
    help="Summary statistics of one tensor (full name, or a unique suffix).",
)
@click.option("--flat", is_flag=True, help="One line per entry (full names) instead of a tree.")
@json_option
def show(checkpoint: str, tensor_name: str | None, flat: bool, as_json: bool) -> int:
    """Show the state tree of CKPT: names, dtypes, shapes, bytes and plain values.

    CKPT may be a run directory (its newest checkpoint is shown). Listing reads no tensor
    data, so it verifies no checksum (use `trainhooks verify`); `--tensor` reads that one
    tensor and verifies it, so its statistics are trustworthy.
    """
    target = resolve_checkpoint(checkpoint)
    with reading(target.path):
        # names, dtypes and shapes come from the manifest: no tensor byte is read (from
        # object storage: none downloaded) except the one --tensor asks for, verified
        tree, stand_ins = load_outline(target.path)
        leaves = flatten(tree)
        if tensor_name is not None:
            wanted = _stand_in_of(leaves, stand_ins, tensor_name)
            if wanted is not None:
                leaves = flatten(load_outline(target.path, {wanted})[0])
    if tensor_name is not None:
        return _show_tensor(target, leaves, tensor_name, as_json)
    if as_json:
        emit_json(
            {
                "checkpoint": target.to_json(),
                "entries": [entry_json(name, value) for name, value in leaves.items()],
            }
        )
        return 0
    console = stdout_console()
    console.print(_header(target, leaves))
    if flat:
        for line in _flat_lines(leaves):
            console.print(line, soft_wrap=True)
    else:
        console.print(_tree(leaves))
    return 0


def _header(target: Resolved, leaves: dict[str, Any]) -> Text:
    tensors = [v for v in leaves.values() if is_tensor(v)]
    data = human_bytes(sum(int(t.nbytes) for t in tensors))
    counts = (
        f"{plural(len(tensors), 'tensor')} ({data}), {plural(len(leaves) - len(tensors), 'value')}"
    )
    info: CheckpointInfo | None = target.info
    if info is None:
        return Text(f"checkpoint {target.path}  (not in its directory's listing)\n{counts}")
    return Text.assemble(
        ("step ", "bold"),
        (str(info.step), "bold cyan"),
        f"  {info.path}\n",
        f"saved {local_time(info.time)}, {human_bytes(info.nbytes)} on disk, ",
        counts,
    )


def _leaf_label(key: str, value: Any) -> Text:
    if is_tensor(value):
        return Text.assemble(
            (key, "cyan"),
            "  ",
            (str(value.dtype), "green"),
            " ",
            shape_text(tuple(value.shape)),
            "  ",
            (human_bytes(value.nbytes), "dim"),
        )
    return Text.assemble((key, "cyan"), " = ", short_repr(value))


def _tree(leaves: dict[str, Any]) -> Tree:
    """A rich tree from flat ``a/b/c`` names; each group shows its tensor count and bytes."""
    root = Tree(".", guide_style="dim", hide_root=True)
    nodes: dict[str, Tree] = {"": root}
    totals = _group_totals(leaves)
    for name, value in leaves.items():
        parts = name.split(SEPARATOR)
        for depth in range(1, len(parts)):
            prefix = SEPARATOR.join(parts[:depth])
            if prefix not in nodes:
                count, nbytes = totals.get(prefix, (0, 0))
                label = Text.assemble((parts[depth - 1], "bold"))
                if count:
                    label.append(f"  {plural(count, 'tensor')}, {human_bytes(nbytes)}", style="dim")
                nodes[prefix] = nodes[SEPARATOR.join(parts[: depth - 1])].add(label)
        nodes[SEPARATOR.join(parts[:-1])].add(_leaf_label(parts[-1], value))
    return root


def _group_totals(leaves: dict[str, Any]) -> dict[str, tuple[int, int]]:
    totals: dict[str, tuple[int, int]] = {}
    for name, value in leaves.items():
        if not is_tensor(value):
            continue
        parts = name.split(SEPARATOR)
        for depth in range(1, len(parts)):
            prefix = SEPARATOR.join(parts[:depth])
            count, nbytes = totals.get(prefix, (0, 0))
            totals[prefix] = (count + 1, nbytes + int(value.nbytes))
    return totals


def _flat_lines(leaves: dict[str, Any]) -> list[Text]:
    """One line per entry, name first, never truncated: made for ``grep`` and ``cut``."""
    width = min(max((len(name) for name in leaves), default=0), 60)
    lines = []
    for name, value in leaves.items():
        line = Text(name.ljust(width), style="cyan")
        if is_tensor(value):
            dtype, shape = str(value.dtype), shape_text(tuple(value.shape))
            line.append(f"  {dtype:<8} {shape:<14} {human_bytes(value.nbytes)}")
        else:
            line.append(f"  = {short_repr(value)}")
        lines.append(line)
    return lines


def _stand_in_of(leaves: dict[str, Any], stand_ins: dict[int, str], name: str) -> str | None:
    """The manifest name of the tensor ``--tensor name`` picks, if it is one."""
    try:
        return stand_ins.get(id(leaves[find_leaf(leaves, name)]))
    except KeyError:
        return None  # _show_tensor reports it


def _show_tensor(target: Resolved, leaves: dict[str, Any], name: str, as_json: bool) -> int:
    try:
        full_name = find_leaf(leaves, name)
    except KeyError as exc:
        raise CliError(f"{target.path}: {exc.args[0]}") from None
    value = leaves[full_name]
    if not is_tensor(value):
        raise CliError(
            f"{target.path}: {full_name!r} is a plain value, not a tensor: {short_repr(value)}"
        )
    stats = tensor_stats(value)
    if as_json:
        emit_json({"checkpoint": target.to_json(), "name": full_name, **stats})
        return 0
    title = f"{full_name}  ({target.path})"
    table = Table(title=title, title_justify="left", show_header=False, min_width=len(title))
    table.add_column("statistic", style="bold")
    table.add_column("value", justify="right")
    for key, stat in stats.items():
        shown = human_bytes(stat) if key == "nbytes" else _number(stat)
        table.add_row(key, shown)
    if value.size:
        table.add_row("first values", _preview(value))
    stdout_console().print(table)
    return 0


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return shape_text(tuple(value))
    return str(value)


def _preview(value: Any, count: int = 6) -> str:
    flat = value.reshape(-1)[:count]
    items = ", ".join(_number(v.item()) for v in flat)
    return f"[{items}{', …' if value.size > count else ''}]"
