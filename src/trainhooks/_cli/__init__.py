"""The ``trainhooks`` command line (console script ``trainhooks = trainhooks._cli:main``).

A top layer over the public API: it never reads checkpoint files itself. Two private
things it uses are explained where they are used: the checkpoint naming rule
(``_resolve.py``) and the store's view of URLs, to ask what is at ``s3://...`` as a shell
asks what is at a path (``_places.py``). See docs/cli.md for usage and exit codes.
"""

from __future__ import annotations

from trainhooks._cli._app import main

__all__ = ["main"]
