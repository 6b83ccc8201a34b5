"""Fixtures for session tests; the recording classes live in ``session_helpers``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # lets tests import session_helpers

from session_helpers import Counter


@pytest.fixture
def trace() -> list[str]:
    return []


@pytest.fixture
def counter() -> Counter:
    return Counter()
