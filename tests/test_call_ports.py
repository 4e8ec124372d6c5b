"""The library's ports: the serializer hangs up through the server's REST client, metrics."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import CancelFrame, EndFrame, InterruptionFrame

from bot.stats import ProcessStats
from pipelines.ports import NO_METRICS, BridgeMetrics
from pipelines.twilio.serializer import TwilioSerializer

pytestmark = pytest.mark.unit

SID = "MZ" + "0" * 32


class _Rest:
    def __init__(self) -> None:
        self.hung_up: list[str] = []

    async def hang_up(self, call_sid: str) -> bool:
        self.hung_up.append(call_sid)
        return True


async def test_end_frame_hangs_up_once_through_the_given_callback() -> None:
    rest = _Rest()
    serializer = TwilioSerializer(
        SID, "CA1", account_sid="AC1", auth_token="tok", hang_up=lambda: rest.hang_up("CA1")
    )
    assert serializer.auto_hang_up
    assert serializer._params.auto_hang_up is False  # Pipecat's own REST call stays off
    assert await serializer.serialize(EndFrame()) is None
    assert await serializer.serialize(CancelFrame()) is None
    assert rest.hung_up == ["CA1"]
    # Other frames still serialize as before.
    assert await serializer.serialize(InterruptionFrame()) is not None


async def test_disabled_hang_up_makes_no_rest_call() -> None:
    rest = _Rest()
    serializer = TwilioSerializer(SID, "CA1", hang_up=lambda: rest.hang_up("CA1"))
    serializer.disable_hang_up()
    assert not serializer.auto_hang_up
    assert await serializer.serialize(CancelFrame()) is None
    assert rest.hung_up == []


def test_server_stats_and_no_metrics_are_bridge_metrics() -> None:
    stats = ProcessStats()
    ports: list[BridgeMetrics] = [stats, NO_METRICS]
    for metrics in ports:
        metrics.bridge_in.add_secs(0.002)
        metrics.bridge_out.add_secs(0.003)
        metrics.add_model_audio_secs(1.5)
        metrics.add_twilio_audio_secs(0.5)
    assert stats.bridge_in.n == 1 and stats.bridge_out.n == 1
    assert stats.model_audio_secs == 1.5 and stats.twilio_audio_secs == 0.5
