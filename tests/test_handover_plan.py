"""``HandoverPlan.switch_at_turn_end``: when a pending goAway moves a call at a turn end."""

from __future__ import annotations

import pytest

from pipelines.gemini.handover import DEFAULT_ANSWER_SECS, HandoverPlan

pytestmark = pytest.mark.unit


def _plan_after_go_away(time_left: float) -> HandoverPlan:
    plan = HandoverPlan()
    plan.connected(0.0)
    plan.go_away(100.0, time_left)
    return plan


def test_a_pending_go_away_switches_at_the_turn_end_before_the_model_answers() -> None:
    plan = _plan_after_go_away(60.0)
    assert plan.switch_at_turn_end(101.0)  # the next connection answers the turn whole


def test_an_answer_already_begun_is_left_to_the_old_connection_when_the_deadline_allows() -> None:
    # The model started answering before the local voice detector ended the turn: switching
    # now would play that start, then the whole answer again from the next connection.
    plan = _plan_after_go_away(60.0)
    plan.model_output(100.5)
    assert not plan.switch_at_turn_end(101.0)


def test_an_answer_begun_too_close_to_the_deadline_still_switches() -> None:
    # A short warning (the emulator's faults; a deadline under an answer's length away): the
    # old connection cannot finish it, so the next one gives it whole.
    plan = _plan_after_go_away(3.0)
    plan.model_output(100.5)
    assert plan.switch_at_turn_end(101.0)
    # Once answers were seen, the allowance is the longest of them plus slack, not the default.
    learned = _plan_after_go_away(8.0)
    learned.model_output(90.0)
    learned.model_done(92.0, complete=True)  # a 2 s answer
    learned.model_output(100.5)
    assert not learned.switch_at_turn_end(101.0)  # 6 s left >= 2 + 1 s
    assert 8.0 < DEFAULT_ANSWER_SECS  # without a seen answer, 8 s would not have been enough
