"""Suite-wide set-up: assert rewriting for the shared helpers, and the session fixtures.

``tests`` is on ``sys.path`` (``pythonpath`` in pyproject.toml), so test modules import
helpers as ``from _support.store import ...``.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("_support")

from _support.session import Counter  # noqa: E402  (after the rewrite is registered)


@pytest.fixture
def trace() -> list[str]:
    """The shared event list recording hooks and listeners append to."""
    return []


@pytest.fixture
def counter() -> Counter:
    """A tiny model whose training step adds 1 to its array (``_support.session.Counter``)."""
    return Counter()
