"""The serializer's built-in REST hang-up (tools without the server's client), over loopback."""

from __future__ import annotations

import base64

import pytest
from loguru import logger
from pipecat.frames.frames import CancelFrame, EndFrame

from pipelines.twilio.serializer import TwilioSerializer
from sim.testing import FakeTwilioRest

pytestmark = pytest.mark.e2e


async def test_end_frame_hangs_up_once_with_the_given_credentials(
    fake_twilio_rest: FakeTwilioRest,
) -> None:
    serializer = TwilioSerializer(
        "MZ1", "CA1", account_sid="AC1", auth_token="tok", base_url=fake_twilio_rest.url
    )
    assert serializer.auto_hang_up
    assert await serializer.serialize(EndFrame()) is None
    assert await serializer.serialize(CancelFrame()) is None
    assert not serializer.auto_hang_up
    assert fake_twilio_rest.requests == [
        {
            "path": "/2010-04-01/Accounts/AC1/Calls/CA1.json",
            "form": {"Status": "completed"},
            "auth": "Basic " + base64.b64encode(b"AC1:tok").decode(),
        }
    ]


async def test_an_unreachable_api_is_logged_and_does_not_raise() -> None:
    serializer = TwilioSerializer(
        "MZ1", "CA1", account_sid="AC1", auth_token="tok", base_url="http://127.0.0.1:9"
    )
    lines: list[str] = []
    sink = logger.add(lines.append, level="ERROR", format="{message}")
    try:
        assert await serializer.serialize(EndFrame()) is None
    finally:
        logger.remove(sink)
    assert len(lines) == 1
    assert "hang-up of call CA1 failed" in lines[0] and "tok" not in lines[0]
