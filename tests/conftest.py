"""Suite-wide set-up: assert rewriting for the shared helpers, and the session fixtures.

``tests`` is on ``sys.path`` (``pythonpath`` in pyproject.toml), so test modules import
helpers as ``from _support.store import ...``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator

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


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API (moto's server) on a free loopback port, one per test session; its
    endpoint and test credentials are in the environment (``AWS_ENDPOINT_URL``, ...)
    while it runs, so child processes started meanwhile inherit them."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in _ENV}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
