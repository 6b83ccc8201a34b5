"""Fixtures of the reliability suite: crash, corruption, resource and fuzz tests.

Short by default (the whole directory runs in a few minutes on a loaded 2-core machine);
``TRAINHOOKS_LONG=1`` enables the long variants (1,000+ SIGKILLs, every bit of every file).
``TRAINHOOKS_FIGURES=path`` appends the measured figures as JSON lines to ``path``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import _support.reliability as support


@pytest.fixture(scope="session")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[support.Zygote]:
    """One forking child for the whole run: torch is imported once, not once per kill."""
    log = tmp_path_factory.mktemp("zygote") / "stderr.log"
    process = support.Zygote(log)
    yield process
    process.close()


@pytest.fixture(scope="session")
def reference() -> support.Reference:
    """The uninterrupted training trajectory the workers' checkpoints must match."""
    return support.Reference()


@pytest.fixture(autouse=True)
def _no_faults_left_behind() -> Iterator[None]:
    """Each test starts and ends with no in-process fault point armed."""
    from trainhooks._store import _faults

    _faults.configure(None)
    yield
    _faults.configure(None)
