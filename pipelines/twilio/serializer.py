"""Twilio Media Streams serializer of our own, on Pipecat's public ``FrameSerializer`` base.

``TwilioSerializer`` turns Twilio's JSON messages into frames and frames into Twilio's JSON,
with marks, the ``stop`` event, strict validation and per-call counters. It owns the whole
protocol: Pipecat's ``TwilioFrameSerializer`` keeps its state private, so it is not subclassed.
Every kind of bad input is dropped, counted in ``bad_input`` and logged once per call (one
WARNING on first occurrence, then only counted); the call goes on. The caller logs
``bad_input`` at call end.

=====================  ==========================================================  ===============
Input                  Answer                                                      Counter
=====================  ==========================================================  ===============
text that is not JSON  ignored                                                     invalid_json
JSON nested > 16 deep  ignored (``input_limits.parse_message``; never a traceback)  too_deep
JSON that is no object ignored                                                     invalid_json
binary frame           ignored (counted by the transport's receive loop)           binary
unknown ``event``      ignored                                                     unknown_event
``connected``/``start`` ignored (the handler read them before the pipeline ran)    duplicate_start
  after start
``streamSid`` differs  ignored                                                     wrong_stream_sid
missing/mistyped field ignored (media without payload, dtmf without digit, ...)    missing_fields
bad base64 / empty     ignored                                                     invalid_payload
  payload
unknown DTMF digit     ignored                                                     invalid_dtmf
message > 16 KiB       aiohttp closes with 1009 (``max_msg_size``); the receive    too_large
                       loop ends and ``on_client_disconnected`` fires
audio faster than      dropped by the transport (``input_limits``); beyond 10 s    audio_too_fast_ms
  real time            dropped, ``on_input_abuse``: the call closes it 1008        (ms dropped)
over 100 messages/s    dropped by the transport; beyond 500 dropped, closed 1008   too_many_messages
other WebSocket error  receive loop ends, ``on_client_disconnected`` fires         ws_error
``stop``               end of call: receive loop ends, ``on_client_disconnected``  (none)
``mark``               ``on_mark(transport, name, played)`` event                  (none)
``dtmf``               ``InputDTMFFrame``                                          (none)
``media``              ``InputAudioRawFrame`` at the input rate                    (none)
=====================  ==========================================================  ===============

Out: audio -> ``media``, ``InterruptionFrame`` -> ``clear``, ``TwilioMarkFrame`` -> ``mark``,
transport messages -> their JSON, ``EndFrame``/``CancelFrame`` -> the hang-up (once).

Audio: caller audio leaves at the input rate (``input_rate``, else the pipeline's input rate);
the server asks for Twilio's 8 kHz, so mu-law is only decoded and the transport upsamples per
batch. Another rate goes through a ``FirStreamResampler`` (about 2 ms of delay instead of soxr
VHQ's 64 ms mean). Output audio already at 8 kHz (pipeline ``audio_out_sample_rate=8000``) is
passed through; any other rate goes through a ``FirStreamResampler`` that never clears itself on
gaps (Pipecat issue #5769). Hot-path messages are built from per-stream string templates.
"""

from __future__ import annotations

import audioop
import base64
import binascii
import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    AudioRawFrame,
    CancelFrame,
    DataFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    SystemFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.serializers.base_serializer import FrameSerializer

from pipelines.audio.resampling import FirStreamResampler
from pipelines.twilio.input_limits import parse_message
from pipelines.twilio.rest_hang_up import TWILIO_API_BASE, rest_hang_up

TWILIO_SAMPLE_RATE_HZ = 8000
KNOWN_EVENTS = frozenset({"connected", "start", "media", "dtmf", "mark", "stop"})
# How every Twilio media message starts, and its payload field (the input fast path).
MEDIA_START = '{"event":"media",'
PAYLOAD_FIELD = '"payload":"'


@dataclass
class TwilioMarkFrame(DataFrame):
    """Ask the output to send a Twilio ``mark`` once all audio queued before it has been sent.

    Parameters:
        mark_name: Mark name; Twilio echoes it when the audio before it has been played.
    """

    mark_name: str


@dataclass
class TwilioMarkEchoFrame(SystemFrame):
    """A ``mark`` echoed by Twilio (consumed by the transport, never pushed downstream).

    Parameters:
        mark_name: The echoed mark name.
    """

    mark_name: str


@dataclass
class TwilioStopFrame(SystemFrame):
    """Twilio's ``stop`` event: the stream (call) ended (consumed by the transport)."""


class TwilioSerializer(FrameSerializer):
    """The Twilio Media Streams protocol: validation, bad-input counters, marks and ``stop``.

    The hang-up on the first ``EndFrame``/``CancelFrame`` goes through ``hang_up`` (what the
    server passes: its REST client on the process's HTTP session). Without it, and with
    ``call_sid``, ``account_sid`` and ``auth_token`` all given, the serializer makes the REST
    request itself (one short-lived HTTP session; for tools, not for the server).

    Args:
        stream_sid: The stream SID from Twilio's ``start`` message.
        call_sid: The call SID (needed for the built-in REST hang-up).
        account_sid: Account SID for the built-in REST hang-up, or None.
        auth_token: Auth token for the built-in REST hang-up, or None.
        params: Serializer parameters; ``params.auto_hang_up`` None (the default) turns the
            built-in REST hang-up on exactly when the credentials are given and ``hang_up``
            is not. It ends up False whenever ``hang_up`` is given (one REST path: that one).
        input_rate: Rate of the caller audio frames it returns; None: ``params.sample_rate``,
            else the pipeline's input rate. 8000 leaves the upsampling to the transport,
            which does it per batch.
        hang_up: Awaited once, on the first ``EndFrame`` or ``CancelFrame`` (the output sends
            those after it drained), to end the call; ``disable_hang_up()`` skips it.
        base_url: REST API root for the built-in hang-up (default Twilio's).
    """

    class InputParams(FrameSerializer.InputParams):
        """Serializer parameters.

        Parameters:
            sample_rate: Rate of the caller audio frames (None: the pipeline's input rate).
            auto_hang_up: Whether the serializer makes the REST hang-up itself (None: when
                the credentials are given and no ``hang_up`` callback is).
        """

        sample_rate: int | None = None
        auto_hang_up: bool | None = None

    def __init__(
        self,
        stream_sid: str,
        call_sid: str | None = None,
        account_sid: str | None = None,
        auth_token: str | None = None,
        params: TwilioSerializer.InputParams | None = None,
        input_rate: int | None = None,
        hang_up: Callable[[], Awaitable[object]] | None = None,
        base_url: str = TWILIO_API_BASE,
    ) -> None:
        """Create the serializer; see the class docstring for the arguments."""
        params = params or TwilioSerializer.InputParams()
        if input_rate is not None:
            params.sample_rate = input_rate
        if hang_up is not None:
            params.auto_hang_up = False  # one REST path: the one given
        elif params.auto_hang_up is None:
            params.auto_hang_up = bool(call_sid and account_sid and auth_token)
        if params.auto_hang_up:
            if not (call_sid and account_sid and auth_token):
                given = {"call_sid": call_sid, "account_sid": account_sid, "auth_token": auth_token}
                missing = ", ".join(k for k, v in given.items() if not v)
                raise ValueError(
                    f"TwilioSerializer for stream {stream_sid}: auto_hang_up needs call_sid, "
                    f"account_sid and auth_token; missing: {missing}. "
                    "Pass them, a hang_up callback, or auto_hang_up=False"
                )
            hang_up = functools.partial(rest_hang_up, base_url, account_sid, auth_token, call_sid)
        super().__init__(params)
        self.params = params
        self.bad_input: dict[str, int] = {}
        self._stream_sid = stream_sid
        self._rate = params.sample_rate or TWILIO_SAMPLE_RATE_HZ  # until setup()
        self._hang_up = hang_up
        self._hang_up_pending = hang_up is not None
        self._input_resampler = FirStreamResampler()
        self._output_resampler = FirStreamResampler()
        sid = json.dumps(stream_sid)
        self._media_prefix = '{"event": "media", "streamSid": ' + sid + ', "media": {"payload": "'
        self._mark_prefix = '{"event": "mark", "streamSid": ' + sid + ', "mark": {"name": '
        self._clear = '{"event": "clear", "streamSid": ' + sid + "}"
        self._sid_field = '"streamSid":' + sid

    # FrameSerializer.setup narrows BaseObject.setup's argument the same way.
    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        """Take the pipeline's input rate, unless ``input_rate`` fixed it.

        Args:
            setup: The pipeline's setup (``audio_in_sample_rate``).
        """
        self._rate = self.params.sample_rate or setup.audio_in_sample_rate

    @property
    def stream_sid(self) -> str:
        """The stream SID this serializer accepts."""
        return self._stream_sid

    @property
    def twilio_rate(self) -> int:
        """Twilio's sample rate (8000)."""
        return TWILIO_SAMPLE_RATE_HZ

    def media_message(self, pcm: bytes | bytearray) -> str:
        """A ``media`` message for 16-bit PCM already at Twilio's rate (the output fast path).

        No frame, no resampler call and no dict per chunk: a template and the payload.
        """
        payload = base64.b64encode(audioop.lin2ulaw(pcm, 2)).decode("ascii")
        return self._media_prefix + payload + '"}}'

    def media_pcm(self, data: str) -> bytes | None:
        """The input fast path: a Twilio ``media`` message's audio as 16-bit PCM at 8 kHz.

        Twilio sends compact JSON that starts with ``{"event":"media",``; for such a message
        on this stream with a non-empty, strictly valid base64 payload this returns its PCM
        (2.6 us less than ``json.loads``, and no frame per message). Anything else, including
        every kind of bad input, returns None: ``deserialize()`` then handles and counts it.
        Only when caller audio leaves the serializer at Twilio's rate (the transport upsamples
        per batch), so both paths hand over the same audio.
        """
        if (
            not data.startswith(MEDIA_START)
            or data[-1] != "}"
            or self._rate != TWILIO_SAMPLE_RATE_HZ
            or self._sid_field not in data
        ):
            return None
        start = data.find(PAYLOAD_FIELD)
        if start < 0:
            return None
        start += len(PAYLOAD_FIELD)
        end = data.find('"', start)
        if end <= start:
            return None
        try:
            payload = binascii.a2b_base64(data[start:end], strict_mode=True)
        except (binascii.Error, ValueError):
            return None
        return audioop.ulaw2lin(payload, 2) if payload else None

    @property
    def auto_hang_up(self) -> bool:
        """Whether an ``EndFrame``/``CancelFrame`` still triggers the hang-up."""
        return self._hang_up_pending

    def disable_hang_up(self) -> None:
        """No REST hang-up from now on.

        For when the caller already left, or the call must fall through to the TwiML apology.
        """
        self.params.auto_hang_up = False
        self._hang_up_pending = False

    def note_bad_input(self, kind: str, detail: str = "", amount: int = 1) -> None:
        """Count bad input of ``kind``; log a WARNING the first time it occurs.

        Args:
            kind: Counter name (see the module table).
            detail: Short description without payload data, for the first log line.
            amount: How much to count (1 message, or e.g. milliseconds of dropped audio).
        """
        before = self.bad_input.get(kind, 0)
        self.bad_input[kind] = before + amount
        if before == 0:
            logger.warning(
                f"Twilio stream {self._stream_sid}: ignored bad input '{kind}'"
                f"{f' ({detail})' if detail else ''}; further ones are only counted"
            )

    async def serialize(self, frame: Frame) -> str | bytes | None:
        """Turn a frame into a Twilio message: ``media``, ``clear``, ``mark``; or hang up.

        Args:
            frame: The frame to serialize.

        Returns:
            The JSON text to send, or None when nothing is to be sent.
        """
        if isinstance(frame, AudioRawFrame):
            if frame.sample_rate == TWILIO_SAMPLE_RATE_HZ:
                return self.media_message(frame.audio) if frame.audio else None
            pcm = await self._output_resampler.resample(
                frame.audio, frame.sample_rate, TWILIO_SAMPLE_RATE_HZ
            )
            return self.media_message(pcm) if pcm else None
        if isinstance(frame, InterruptionFrame):
            return self._clear
        if isinstance(frame, TwilioMarkFrame):
            return self._mark_prefix + json.dumps(frame.mark_name) + "}}"
        if isinstance(frame, EndFrame | CancelFrame):
            if self._hang_up_pending and self._hang_up is not None:
                self._hang_up_pending = False
                await self._hang_up()
            return None
        if isinstance(frame, OutputTransportMessageFrame | OutputTransportMessageUrgentFrame):
            return None if self.should_ignore_frame(frame) else json.dumps(frame.message)
        return None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        """Turn one Twilio message into a frame, or None (counted) when it is bad.

        Args:
            data: The WebSocket message.

        Returns:
            ``InputAudioRawFrame``, ``InputDTMFFrame``, ``TwilioMarkEchoFrame``,
            ``TwilioStopFrame`` or None.
        """
        if isinstance(data, bytes):
            self.note_bad_input("binary", f"{len(data)} bytes")
            return None
        message, bad = parse_message(data)
        if bad is not None:
            self.note_bad_input(bad, f"{len(data)} chars")
            return None
        if not isinstance(message, dict):
            self.note_bad_input("invalid_json", f"top level is {type(message).__name__}")
            return None
        event = message.get("event")
        if not isinstance(event, str) or event not in KNOWN_EVENTS:
            self.note_bad_input("unknown_event", f"event={str(event)[:40]!r}")
            return None
        if event in ("connected", "start"):
            self.note_bad_input("duplicate_start", f"'{event}' after the stream started")
            return None
        sid = message.get("streamSid")
        if not isinstance(sid, str):
            self.note_bad_input("missing_fields", f"'{event}' without streamSid")
            return None
        if sid != self._stream_sid:
            self.note_bad_input("wrong_stream_sid", f"'{event}' for another stream")
            return None
        if event == "media":
            return await self._media(message)
        if event == "dtmf":
            return self._dtmf(message)
        if event == "mark":
            name = _field(message, "mark", "name")
            if not isinstance(name, str):
                self.note_bad_input("missing_fields", "'mark' without mark.name")
                return None
            return TwilioMarkEchoFrame(mark_name=name)
        return TwilioStopFrame()

    async def _media(self, message: dict[str, Any]) -> Frame | None:
        payload_b64 = _field(message, "media", "payload")
        if not isinstance(payload_b64, str):
            self.note_bad_input("missing_fields", "'media' without media.payload")
            return None
        try:
            payload = base64.b64decode(payload_b64, validate=True)
        except (binascii.Error, ValueError):
            self.note_bad_input("invalid_payload", "payload is not valid base64")
            return None
        if not payload:
            self.note_bad_input("invalid_payload", "empty payload")
            return None
        pcm = audioop.ulaw2lin(payload, 2)
        if self._rate != TWILIO_SAMPLE_RATE_HZ:
            pcm = await self._input_resampler.resample(pcm, TWILIO_SAMPLE_RATE_HZ, self._rate)
            if not pcm:
                return None
        return InputAudioRawFrame(audio=pcm, num_channels=1, sample_rate=self._rate)

    def _dtmf(self, message: dict[str, Any]) -> Frame | None:
        digit = _field(message, "dtmf", "digit")
        if not isinstance(digit, str):
            self.note_bad_input("missing_fields", "'dtmf' without dtmf.digit")
            return None
        try:
            return InputDTMFFrame(KeypadEntry(digit))
        except ValueError:
            self.note_bad_input("invalid_dtmf", "digit is not 0-9, * or #")
            return None


def _field(message: dict[str, Any], section: str, name: str) -> Any:
    """Return ``message[section][name]`` or None when either level is missing or mistyped."""
    inner = message.get(section)
    return inner.get(name) if isinstance(inner, dict) else None
