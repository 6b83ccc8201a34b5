"""Listener tests share one training run, in ``listener_helpers``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # lets tests import listener_helpers
