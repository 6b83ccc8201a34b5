"""The ``trainhooks`` click group and ``main``: where every failure becomes one line.

Click runs in non-standalone mode so that this module, not click, decides how a failure
ends: our own and the store's typed errors become ``trainhooks: error: ...`` on stderr
with the exit code documented in ``_errors``; click's usage errors keep click's usage
hint (exit 2); anything unexpected is reported as an internal error (exit 4) without a
traceback unless ``TRAINHOOKS_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

import click

import trainhooks
from trainhooks._cli import _commands_diff, _commands_inspect, _commands_manage, _commands_verify
from trainhooks._cli._errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    error_line,
    exit_code_for,
)

_EPILOG = """\b
Exit codes: 0 ok, 1 corrupt checkpoint, 2 usage error / path not found / no checkpoint,
3 operation failed (locked, I/O, unsupported format), 4 internal error, 130 interrupted.
"""


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=_EPILOG,
)
@click.version_option(trainhooks.__version__, "-V", "--version", prog_name="trainhooks")
@click.option(
    "--basename",
    metavar="NAME",
    default=None,
    help="Checkpoint name prefix (Saver(basename=...)); detected when omitted.",
)
def cli(basename: str | None) -> None:
    """Inspect, verify and manage trainhooks checkpoint directories.

    DIR is a directory of checkpoints (what a Saver or CheckpointSaverHook writes to);
    CKPT is one checkpoint inside it (DIR/ckpt-000000000100). Where a command needs one
    checkpoint, a DIR means its newest checkpoint.
    """


for _command in (
    _commands_inspect.ls,
    _commands_inspect.show,
    _commands_verify.verify,
    _commands_diff.diff,
    _commands_manage.prune,
    _commands_manage.export,
):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code (the console script exits with it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # click's own main() would turn a broken pipe into exit 1 (our "corrupt" code), so the
        # context is driven here and every outcome is mapped to the documented codes.
        with cli.make_context("trainhooks", args) as ctx:
            result = cli.invoke(ctx)
    except click.exceptions.Exit as exit_:
        return exit_.exit_code
    except click.exceptions.Abort:
        print("trainhooks: error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except (Exception, KeyboardInterrupt) as exc:
        if os.environ.get("TRAINHOOKS_DEBUG"):
            traceback.print_exc()
        print(error_line(exc), file=sys.stderr)
        return exit_code_for(exc)
    try:
        sys.stdout.flush()  # surface a broken pipe here, not at interpreter exit
    except BrokenPipeError:
        return _quiet_broken_pipe()
    return result if isinstance(result, int) else EXIT_OK


def _quiet_broken_pipe() -> int:
    """``trainhooks ls DIR | head``: the reader left; exit quietly, as coreutils do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK
