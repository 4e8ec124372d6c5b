"""The garbage-collector policy: live calls frozen at setup, ended calls swept in rare passes."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from bot.gc_policy import FREEZE_MIN_LIVE, GEN0_THRESHOLD, GcPolicy

pytestmark = pytest.mark.unit


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def heap_frozen_before() -> Iterator[None]:
    """Restore the process's frozen heap after a test (a forked suite worker inherits one)."""
    frozen = gc.get_freeze_count() > 0
    yield
    if frozen:
        gc.freeze()
    else:
        gc.unfreeze()


@pytest.fixture
def unfrozen_heap(heap_frozen_before: None) -> None:
    """The heap as in a process that no parent froze (``voicebot serve``)."""
    gc.unfreeze()


def test_live_objects_are_frozen_and_ended_cycles_are_swept(unfrozen_heap: None) -> None:
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


def test_few_live_calls_are_not_frozen_and_their_ends_need_no_sweep(unfrozen_heap: None) -> None:
    # A flood of short calls next to a few live ones (a caller's retries, an attacker): nothing
    # is frozen, so each ended call's cycles are freed by the automatic collections and no
    # sweep (a walk of the whole heap, every live call stalled) is ever forced.
    policy = GcPolicy(min_ended=3)
    policy.start()
    try:
        calls = []
        for _ in range(10):
            call = _Cycle()
            calls.append(weakref.ref(call))
            policy.call_ready(live_calls=2)
            del call
            policy.call_ended(live_calls=1)
        assert policy.sweeps == 0
        # No call was frozen: their cycles are within reach of a normal collection. (The freeze
        # count is no witness: frozen objects freed meanwhile, by any thread, lower it.)
        gc.collect()
        assert not [ref for ref in calls if ref() is not None]
    finally:
        policy.stop()


def test_a_heap_frozen_before_the_fork_stays_frozen_and_later_servers_freeze_nothing(
    heap_frozen_before: None,
) -> None:
    # A parent froze its heap before it forked this process (the suite's fork server): the
    # policy keeps it frozen at stop, and a later server in the process freezes nothing, so an
    # earlier server's cycles stay within the automatic collections' reach.
    parents = _Cycle()
    gc.collect()
    gc.freeze()
    policy = GcPolicy(min_ended=3)
    policy.start()
    policy.stop()
    parents_ref = weakref.ref(parents)
    del parents
    gc.collect()
    assert parents_ref() is not None  # still frozen: the stop did not unfreeze the heap
    earlier = _Cycle()  # left behind by an earlier server
    earlier_ref = weakref.ref(earlier)
    policy.start()
    try:
        assert gc.get_threshold()[0] == GEN0_THRESHOLD
        del earlier
        gc.collect()
        assert earlier_ref() is None  # the second start did not freeze it
    finally:
        policy.stop()
    assert gc.get_threshold()[0] != GEN0_THRESHOLD
