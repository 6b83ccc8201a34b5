"""The bookkeeping of rollbacks and recoverable errors under ``torch.distributed``
(``_session/_dist_recovery.py``); the agreement itself is tested on real ranks in
tests/dist/test_session_rollback.py."""

from __future__ import annotations

import pytest

from trainhooks import DistributedRecoveryError, RollbackRequested
from trainhooks._session._dist_recovery import RecoveryAgreement


def test_of_several_requests_noted_the_one_skipping_the_earliest_step_is_kept() -> None:
    agreement = RecoveryAgreement()
    first = RollbackRequested(4, (6,), "NaN at 6")
    agreement.note(first)
    agreement.note(RollbackRequested(4, (7,), "NaN at 7, its echo"))
    assert agreement.pending is first
    earlier = RollbackRequested(0, (5,), "NaN at 5")
    agreement.note(earlier)
    assert agreement.pending is earlier


def test_only_an_error_raised_on_every_rank_together_may_be_recovered_from() -> None:
    agreement = RecoveryAgreement()
    together = ConnectionError("at a sync point")
    with pytest.raises(ConnectionError), agreement.together():
        raise together
    agreement.check_recoverable(together, rank=1, step=8)  # no error: every rank has it
    alone = ConnectionError("in the step function")
    with pytest.raises(DistributedRecoveryError, match="not at a sync point") as caught:
        agreement.check_recoverable(alone, rank=1, step=3)
    assert (caught.value.rank, caught.value.step, caught.value.__cause__) == (1, 3, alone)
