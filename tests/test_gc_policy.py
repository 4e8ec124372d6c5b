"""The garbage-collector policy: live calls frozen at setup, ended calls swept in rare passes."""

from __future__ import annotations

import gc

import pytest

from bot.gc_policy import FREEZE_MIN_LIVE, GEN0_THRESHOLD, GcPolicy

pytestmark = pytest.mark.unit


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_live_objects_are_frozen_and_ended_cycles_are_swept() -> None:
    policy = GcPolicy(min_ended=3)
    policy.start()
    try:
        assert gc.get_threshold()[0] == GEN0_THRESHOLD
        calls = [_Cycle() for _ in range(4)]
        policy.call_ready(live_calls=FREEZE_MIN_LIVE)
        frozen = gc.get_freeze_count()
        assert frozen > 0
        del calls  # the calls end: their cycles now wait in the permanent generation
        assert gc.collect() == 0  # frozen garbage is out of reach of normal collections
        policy.call_ended(live_calls=5)
        policy.call_ended(live_calls=5)
        assert policy.sweeps == 0  # 2 ended < max(3, 5 live)
        for _ in range(3):
            policy.call_ended(live_calls=5)
        assert policy.sweeps == 1 and policy.ended_since_sweep == 0
        assert gc.get_freeze_count() < frozen  # the four cycles were freed
        policy.call_ready(live_calls=FREEZE_MIN_LIVE)
        policy.call_ended(live_calls=0)  # nothing live: sweep at once
        assert policy.sweeps == 2
    finally:
        policy.stop()
    assert gc.get_threshold()[0] != GEN0_THRESHOLD
    assert gc.get_freeze_count() == 0


def test_few_live_calls_are_not_frozen_and_their_ends_need_no_sweep() -> None:
    # A flood of short calls next to a few live ones (a caller's retries, an attacker): nothing
    # is frozen, so each ended call's cycles are freed by the automatic collections and no
    # sweep (a walk of the whole heap, every live call stalled) is ever forced.
    policy = GcPolicy(min_ended=3)
    policy.start()
    try:
        frozen = gc.get_freeze_count()
        for _ in range(10):
            call = _Cycle()
            policy.call_ready(live_calls=2)
            del call
            policy.call_ended(live_calls=1)
        assert gc.get_freeze_count() == frozen  # no call was frozen
        assert policy.sweeps == 0
        assert gc.collect() > 0  # their cycles are within reach of a normal collection
    finally:
        policy.stop()
