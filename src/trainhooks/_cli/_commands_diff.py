"""``trainhooks diff A B``: what changed between two checkpoints, tensor by tensor.

Both checkpoints are loaded with full checksum verification: a difference reported
between two checkpoints must be a real one, not a flipped bit on disk.
"""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

import trainhooks
from trainhooks._cli._render import (
    emit_json,
    human_bytes,
    json_option,
    make_table,
    shape_text,
    short_repr,
    stdout_console,
)
from trainhooks._cli._resolve import Resolved, reading, resolve_checkpoint
from trainhooks._cli._tree import TensorChange, TreeDiff, diff_trees, entry_json, is_tensor


@click.command("diff")
@click.argument("old", metavar="A")
@click.argument("new", metavar="B")
@json_option
def diff(old: str, new: str, as_json: bool) -> int:
    """Compare checkpoint A with checkpoint B.

    Lists tensors and values added, removed and changed; for each changed tensor the
    number of differing elements, the largest absolute difference and the largest
    difference relative to the tensor's scale (max|a-b| / max(max|a|, max|b|)).
    A or B may be a run directory (its newest checkpoint). Exit 0 whether or not they
    differ; use --json and its "identical" field in scripts.
    """
    a, b = resolve_checkpoint(old), resolve_checkpoint(new)
    trees = []
    for target in (a, b):
        with reading(target.path):
            trees.append(trainhooks.load(target.path, verify=True))
    result = diff_trees(trees[0], trees[1])
    if as_json:
        emit_json(_diff_json(a, b, result))
    else:
        _print_diff(stdout_console(), a, b, result)
    return 0


def _change_json(change: TensorChange) -> dict[str, Any]:
    return {
        "name": change.name,
        "kind": "tensor",
        "old_dtype": change.old_dtype,
        "new_dtype": change.new_dtype,
        "old_shape": list(change.old_shape),
        "new_shape": list(change.new_shape),
        "num_changed": change.num_changed,
        "max_abs": change.max_abs,
        "max_rel": change.max_rel,
    }


def _diff_json(a: Resolved, b: Resolved, result: TreeDiff) -> dict[str, Any]:
    changed = [_change_json(c) for c in result.changed_tensors]
    changed += [
        {"name": name, "kind": "value", "old": _jsonable(left), "new": _jsonable(right)}
        for name, left, right in result.changed_values
    ]
    return {
        "a": a.to_json(),
        "b": b.to_json(),
        "identical": result.identical,
        "added": [entry_json(n, v) for n, v in result.added.items()],
        "removed": [entry_json(n, v) for n, v in result.removed.items()],
        "changed": changed,
        "num_unchanged": result.num_unchanged,
    }


def _jsonable(value: Any) -> Any:
    """A changed value as JSON: a tensor on one side is described, not dumped."""
    if is_tensor(value):
        return {"dtype": str(value.dtype), "shape": list(value.shape)}
    return value


def _print_diff(console: Console, a: Resolved, b: Resolved, result: TreeDiff) -> None:
    for label, target in (("A", a), ("B", b)):
        step = f"step {target.info.step}  " if target.info is not None else ""
        console.print(Text.assemble((f"{label}: ", "bold"), step, str(target.path)))
    if result.changed_tensors:
        console.print(_changed_table(result.changed_tensors))
    if result.changed_values:
        table = make_table(
            f"values changed ({len(result.changed_values)})",
            ("name", "left"),
            ("A", "left", 40),
            ("B", "left", 40),
        )
        for name, left, right in result.changed_values:
            table.add_row(Text(name), Text(_describe(left)), Text(_describe(right)))
        console.print(table)
    for title, entries, style in (
        ("added", result.added, "green"),
        ("removed", result.removed, "red"),
    ):
        if entries:
            table = make_table(
                f"{title} ({len(entries)})",
                ("name", "left"),
                ("dtype / value", "left", 40),
                ("shape", "left"),
                ("size", "right"),
            )
            for name, value in entries.items():
                table.add_row(Text(name, style=style), *_entry_cells(value))
            console.print(table)
    counts = (
        f"{len(result.changed_tensors) + len(result.changed_values)} changed, "
        f"{len(result.added)} added, {len(result.removed)} removed, "
        f"{result.num_unchanged} unchanged"
    )
    console.print(Text("identical" if result.identical else counts, style="bold"))


def _changed_table(changes: list[TensorChange]) -> Table:
    table = make_table(
        f"tensors changed ({len(changes)})",
        ("name", "left"),
        ("dtype", "left"),
        ("shape", "left"),
        ("elements changed", "right"),
        ("max abs diff", "right"),
        ("max rel diff", "right"),
    )
    for change in changes:
        dtype = (
            change.old_dtype
            if change.old_dtype == change.new_dtype
            else (f"{change.old_dtype} → {change.new_dtype}")
        )
        shape = (
            shape_text(change.old_shape)
            if change.old_shape == change.new_shape
            else (f"{shape_text(change.old_shape)} → {shape_text(change.new_shape)}")
        )
        table.add_row(
            Text(change.name, style="yellow"),
            dtype,
            shape,
            _count(change.num_changed),
            _float(change.max_abs),
            _float(change.max_rel),
        )
    return table


def _entry_cells(value: Any) -> tuple[str, str, str]:
    if is_tensor(value):
        return str(value.dtype), shape_text(tuple(value.shape)), human_bytes(value.nbytes)
    return short_repr(value), "", ""


def _describe(value: Any) -> str:
    if is_tensor(value):
        return f"tensor {value.dtype} {shape_text(tuple(value.shape))}"
    return short_repr(value, limit=60)


def _count(value: int | None) -> str:
    return "—" if value is None else str(value)


def _float(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"
