"""Pipecat's Gemini Live service, wrapped for one process serving many phone calls.

What this fixes in ``GeminiLiveLLMService`` (pipecat 1.14), each a pitfall in
``shared/reference/pipecat-1.x.md``:

- **Per-call clients.** The service builds a ``genai.Client`` per instance (three SSL contexts,
  ~60 ms of blocked event loop). Here every call shares one client per API version.
- **Unbounded bot-audio buffer.** ``_bot_audio_buffer`` grows by every byte of bot speech and is
  never read (~2.9 MB per minute of bot speech per call). Here it is a sink that keeps nothing.
- **Silent rejections.** A setup the Live API rejects (close 1007/1008 from ``connect()``) only
  logs "unexpected exception" in the service; permanent mid-session closes are retried three
  times. Here both end the call at once through ``on_session_failed``, so the caller hears the
  TwiML apology and the log names the persona file and the fix.
- **Stale audio after a local barge-in.** When local VAD interrupts, the model keeps streaming
  the reply until its own VAD notices; the service would start playing that tail again. Here the
  rest of an interrupted generation is dropped (audio and its transcript) until the model ends
  that turn.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from google import genai
from google.genai.errors import APIError
from google.genai.types import HttpOptions, LiveServerMessage
from loguru import logger
from pipecat.frames.frames import Frame, InterruptionFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.google.gemini_live.llm import GeminiLiveLLMService
from pipecat.services.google.utils import update_google_client_http_options

# Close codes the Live API uses for setups and requests that will never succeed as sent.
PERMANENT_CLOSE_CODES = frozenset({1007, 1008})

SessionFailedCallback = Callable[[int | None, str], Awaitable[None]]


class _DiscardingBuffer:
    """Stands in for ``bytearray`` where the service appends audio nobody reads."""

    def extend(self, _data: bytes) -> None:
        return None

    def clear(self) -> None:
        return None

    def __len__(self) -> int:
        return 0


class GeminiClients:
    """One ``genai.Client`` per API version for the whole process.

    Args:
        api_key: Gemini API key (any non-empty string for the emulator).
        base_url: Live API base URL; ``None`` for Google's.
        ca_file: PEM of a private CA (the emulator's) trusted for ``base_url`` only.
    """

    def __init__(self, api_key: str, base_url: str | None = None, ca_file: Path | None = None):
        self._api_key = api_key
        self._base_url = base_url
        self._ssl = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
        self._clients: dict[str, genai.Client] = {}

    def get(self, api_version: str) -> genai.Client:
        """The shared client for ``api_version``, built on first use."""
        client = self._clients.get(api_version)
        if client is None:
            options = HttpOptions(api_version=api_version)
            if self._base_url:
                options.base_url = self._base_url
            if self._ssl is not None:
                options.async_client_args = {"ssl": self._ssl}
            options = update_google_client_http_options(options)
            client = genai.Client(api_key=self._api_key, http_options=options)
            self._clients[api_version] = client
        return client


class CallGeminiLive(GeminiLiveLLMService):
    """``GeminiLiveLLMService`` for one phone call, on a shared client.

    Args:
        client: The process's shared ``genai.Client`` for the persona's API version.
        on_session_failed: Awaited once with ``(close_code, reason)`` when the session is
            rejected or lost for good; the call should end.
        adjust_config: Applied to each ``LiveConnectConfig`` before connecting (persona
            fields Pipecat has no setting for, such as transcription off).
        **kwargs: Passed to ``GeminiLiveLLMService``.
    """

    def __init__(
        self,
        *,
        client: genai.Client,
        on_session_failed: SessionFailedCallback,
        adjust_config: Callable[[Any], Any] | None = None,
        **kwargs,
    ) -> None:
        self._shared_client = client
        self._adjust_config = adjust_config
        self._on_session_failed = on_session_failed
        self._session_failed = False
        self._generating = False
        self._dropping_interrupted_turn = False
        super().__init__(api_key="shared-client", **kwargs)
        # Turns come from local VAD in the user aggregator; the per-call advice is noise.
        self._warned_realtime_service_no_turn_frames = True
        self._bot_audio_buffer = _DiscardingBuffer()  # type: ignore[assignment]

    def create_client(self) -> None:
        """Use the process's shared client instead of building one per call."""
        self._client = self._shared_client

    @property
    def session_failed(self) -> bool:
        """True once the session was rejected or lost for good."""
        return self._session_failed

    async def _fail_session(self, code: int | None, reason: str) -> None:
        if self._session_failed:
            return
        self._session_failed = True
        await self._on_session_failed(code, reason)

    async def _connection_task_handler(self, config) -> None:
        if self._adjust_config is not None:
            config = self._adjust_config(config)
        try:
            await super()._connection_task_handler(config)
        except APIError as e:
            # Raised by connect(): the setup was refused (or the service is unavailable).
            await self._fail_session(e.code, e.details or e.message or str(e))
        except OSError as e:
            await self._fail_session(None, f"cannot reach the Live API: {e}")

    async def _handle_connection_error(self, error: Exception) -> bool:
        if isinstance(error, APIError) and error.code in PERMANENT_CLOSE_CODES:
            await self._fail_session(error.code, error.details or str(error))
            return False
        should_retry = await super()._handle_connection_error(error)
        if not should_retry:
            code = error.code if isinstance(error, APIError) else None
            await self._fail_session(code, f"Live API connection lost: {error}")
        return should_retry

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Note local interruptions, so the rest of the interrupted reply is dropped."""
        if isinstance(frame, InterruptionFrame) and self._generating:
            self._dropping_interrupted_turn = True
        await super().process_frame(frame, direction)

    async def _handle_server_message(self, message: LiveServerMessage) -> None:
        sc = message.server_content
        turn_over = False
        if sc is not None:
            turn_over = bool(sc.interrupted or sc.turn_complete or sc.generation_complete)
            if self._dropping_interrupted_turn:
                if sc.model_turn is not None or sc.output_transcription is not None:
                    sc.model_turn = None
                    sc.output_transcription = None
            elif sc.model_turn is not None:
                self._generating = True
        await super()._handle_server_message(message)
        if turn_over:
            self._generating = False
            if self._dropping_interrupted_turn:
                logger.debug("dropped the rest of an interrupted reply")
            self._dropping_interrupted_turn = False
