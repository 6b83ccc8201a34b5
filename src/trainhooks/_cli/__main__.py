"""``python -m trainhooks._cli``: the console script without the installed entry point."""

from __future__ import annotations

import sys

from trainhooks._cli import main

sys.exit(main())
