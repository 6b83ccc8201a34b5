"""A real S3 API for the object-storage tests: moto's server on a free loopback port, one
per test session; each test gets a fresh bucket and the server is reset after it.

The server itself (``s3_endpoint``) is in the suite's ``tests/conftest.py``: the
distributed tests use it too. Credentials and the endpoint reach trainhooks the way they
reach any boto client, through the environment (``AWS_ENDPOINT_URL``), so the code under
test passes nothing special.
"""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator

import pytest


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
