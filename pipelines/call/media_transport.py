"""The call's Twilio side: its Media Streams serializer and WebSocket transport, and their bounds.

``CallPipeline`` (``pipeline``) builds both here. The transport's output runs at 8 kHz so its
media sender does the single 24 k -> 8 k conversion with a stream resampler it flushes, and the
serializer passes audio through (pitfall #5769: the serializer's own output resampler clips
word endings); caller audio stays at 8 kHz until the transport has batched it.
"""

from __future__ import annotations

import functools

from aiohttp import web

from pipelines.call.resources import CallInfo, ProcessResources
from pipelines.ports import CallMetrics
from pipelines.twilio.serializer import TwilioSerializer
from pipelines.twilio.transport import AiohttpWebsocketParams, AiohttpWebsocketTransport

PHONE_RATE_HZ = 8000
END_SILENCE_SECS = 0  # the end mark proves the goodbye was played; no padding needed
# How far bot audio may be sent ahead of the phone's playout: Twilio's buffer then rides out
# a loop stall of up to this long with no audible gap (a garbage-collector sweep takes ~300 ms
# at 150 live calls, bot.gc_policy; a burst of call setups). It costs nothing on barge-in:
# `clear` empties that buffer at once.
PLAYOUT_LEAD_SECS = 0.4
# Twilio sends a media message every 20 ms while a call is up: this long with nothing from it
# (after `start`) and the stream is dead; the call ends and frees its Gemini session and slot.
MEDIA_TIMEOUT_SECS = 10.0


def media_transport(
    ws: web.WebSocketResponse,
    info: CallInfo,
    resources: ProcessResources,
    metrics: CallMetrics,
) -> tuple[TwilioSerializer, AiohttpWebsocketTransport]:
    """The call's serializer and transport on its prepared media socket.

    The serializer hangs up through the server's REST client after the output has drained and
    the end mark came back (the goodbye was played); every other ending disables it first.

    Args:
        ws: The media WebSocket (``connected`` and ``start`` already read).
        info: The call's identifiers.
        resources: The process's shared resources (REST client, time scale).
        metrics: The call's metrics (bridge latency, audio seconds, output events).

    Returns:
        The serializer and the transport that uses it.
    """
    rest = resources.rest
    serializer = TwilioSerializer(
        info.stream_sid,
        call_sid=info.call_sid,
        hang_up=functools.partial(rest.hang_up, info.call_sid) if rest else None,
        # Caller audio stays at 8 kHz until the transport has batched it (one 8 k -> 16 k
        # resampler call per 40 ms instead of per 20 ms message).
        input_rate=PHONE_RATE_HZ,
    )
    transport = AiohttpWebsocketTransport(
        ws,
        AiohttpWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_out_end_silence_secs=END_SILENCE_SECS,
            serializer=serializer,
            max_lead_secs=PLAYOUT_LEAD_SECS,
            media_timeout_secs=MEDIA_TIMEOUT_SECS * resources.time_scale,
        ),
        metrics=metrics,
    )
    return serializer, transport
