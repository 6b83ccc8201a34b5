"""The ``trainhooks`` command line (console script ``trainhooks = trainhooks._cli:main``).

A top layer over the public API: it never reads checkpoint files itself (the one private
name it uses, the checkpoint naming rule, is explained in ``_resolve.py``). See docs/cli.md
for usage and exit codes.
"""

from __future__ import annotations

from trainhooks._cli._app import main

__all__ = ["main"]
