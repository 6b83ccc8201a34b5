"""A real S3 API for the object-storage tests: moto's server on a free loopback port, one
per test session; each test gets a fresh bucket and the server is reset after it.

Credentials and the endpoint reach trainhooks the way they reach any boto client, through
the environment (``AWS_ENDPOINT_URL``), so the code under test passes nothing special.
"""

from __future__ import annotations

import logging
import os
import socket
import urllib.request
import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
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


@pytest.fixture
def s3_url(s3_endpoint: str) -> Iterator[str]:
    """``s3://<fresh bucket>/run``; the server's state is wiped afterwards."""
    import boto3

    bucket = f"th-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    try:
        yield f"s3://{bucket}/run"
    finally:
        request = urllib.request.Request(s3_endpoint + "/moto-api/reset", method="POST")
        urllib.request.urlopen(request).close()


@pytest.fixture
def s3(s3_endpoint: str):  # type: ignore[no-untyped-def]
    """An s3fs filesystem on the server, to look at and damage objects directly."""
    import s3fs

    return s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        client_kwargs={"endpoint_url": s3_endpoint},
        skip_instance_cache=True,
        use_listings_cache=False,
    )
