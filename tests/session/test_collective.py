"""The distributed session's pieces that need no process group (``_session/_collective.py``).

The protocol itself runs on real gloo ranks in ``tests/dist/test_session.py``.
"""

from __future__ import annotations

import pytest

from trainhooks import MonitoredSession
from trainhooks._session._collective import SyncedCoordinator, _grid, detect


def test_one_process_session_has_no_distributed_side() -> None:
    assert detect(100) is None
    with MonitoredSession(state={}) as sess:
        assert sess.distributed is None


@pytest.mark.parametrize("bad", [0, -3])
def test_sync_every_steps_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="sync_every_steps"):
        MonitoredSession(state={}, sync_every_steps=bad)
    with pytest.raises(TypeError, match="sync_every_steps"):
        MonitoredSession(state={}, sync_every_steps=True)


@pytest.mark.parametrize(
    ("sync_every", "save_steps", "grid"),
    [(100, None, 100), (100, 30, 30), (100, 100, 100), (100, 150, 50), (100, 1000, 100)],
)
def test_every_save_step_is_a_sync_point_and_none_is_more_than_k_apart(
    sync_every: int, save_steps: int | None, grid: int
) -> None:
    assert _grid(sync_every, save_steps) == grid
    assert grid <= sync_every and (save_steps is None or save_steps % grid == 0)


def test_a_stop_request_waits_for_agreement() -> None:
    coord = SyncedCoordinator()
    coord.request_stop()
    assert coord.requested and not coord.should_stop()
    coord.agreed = True
    assert coord.should_stop()
    coord.clear_stop()
    assert not coord.requested and not coord.should_stop()
    coord.halt()
    assert coord.should_stop()
