"""The ``trainhooks`` command line (console script ``trainhooks = trainhooks._cli:main``).

A top layer over the public store API only: it never reads checkpoint files itself. See
docs/cli.md for usage and exit codes.
"""

from __future__ import annotations

from trainhooks._cli._app import main

__all__ = ["main"]
