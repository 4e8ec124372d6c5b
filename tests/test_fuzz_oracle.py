"""The fuzzer's oracle is not blind: every channel a crash can take is recorded (issue 13)."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
from loguru import logger

from sim.fuzz.oracle import Oracle, close_is_an_answer
from sim.fuzz.strategies import STREAM_SID, Message, render

pytestmark = pytest.mark.unit


async def test_every_crash_channel_is_recorded_and_warnings_are_not() -> None:
    async def boom() -> None:
        raise RecursionError("maximum recursion depth exceeded")

    with Oracle() as oracle:
        logger.warning("ignored bad input 'too_deep'")  # an answer, not a crash
        assert oracle.problems == []
        logger.error("call CA1 failed")
        try:
            raise ValueError("boundary missed")
        except ValueError:
            logger.opt(exception=True).warning("a warning with a traceback")
            logging.getLogger("aiohttp.server").exception("Error handling request")
        task = asyncio.get_running_loop().create_task(boom())
        await asyncio.sleep(0)
        del task  # "Task exception was never retrieved" goes to the loop's handler
        gc.collect()
    assert len(oracle.problems) == 4, oracle.problems
    assert "call CA1 failed" in oracle.problems[0]
    assert "ValueError: boundary missed" in oracle.problems[1]
    assert oracle.problems[2].startswith("logging aiohttp.server: Error handling request")
    assert "RecursionError" in oracle.problems[3]
    # Uninstalled: nothing more is recorded.
    logger.error("after")
    assert len(oracle.problems) == 4


def test_close_codes_that_are_answers() -> None:
    for code in (1000, 1001, 1008, 1009, 1013):
        assert close_is_an_answer(code, "")
    assert close_is_an_answer(1011, "no media from Twilio for 10 s")
    assert not close_is_an_answer(1011, "internal error")
    assert not close_is_an_answer(1006, "")
    assert not close_is_an_answer(None, "")


def test_markers_become_the_sids_of_the_call_under_attack() -> None:
    msg = Message("twilio", '{"streamSid":"' + STREAM_SID.replace("\x00", "\\u0000") + '"}')
    assert render(msg, "MZ1", "CA1") == '{"streamSid":"MZ1"}'
    assert render(Message("binary", b"\x00SID\x00"), "MZ1", "CA1") == b"\x00SID\x00"
