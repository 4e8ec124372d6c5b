"""The call's text to the model: the initial history, instructions, the caller's keyed entries.

Part of ``CallGeminiLive`` (``service``), which owns one ``TextInput`` and hands it the
pipeline's context and the connection's events:

- the initial history (the greeting instruction, a developer message of the context) goes as
  ``clientContent`` once the session is ready, and again to a fresh session after a reconnect
  that could not resume; the session then takes realtime input (``CallerInput.ready``);
- ``instruct`` uses realtime text on models that refuse mid-session ``clientContent``
  (``gemini_models``), a completed client turn on the others;
- ``caller_text`` sends what the caller typed as realtime text, a caller turn.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from google.genai.types import Content, Part
from pipecat.processors.aggregators.llm_context import LLMContext

from pipelines.gemini.caller_input import CallerInput
from pipelines.gemini.connection import LiveConnection

InvocationParams = Callable[[LLMContext], Awaitable[Mapping[str, Any]]]


class TextInput:
    """Seeds the session with the call's history and sends instructions and typed text.

    Args:
        conn: The call's Live API connection.
        caller_input: The caller audio side; its ``ready`` says the session takes realtime input.
        invocation_params: The adapter's ``get_llm_invocation_params`` (context -> messages).
        send_error: Reports a failed send (ignored once the connection is going).
        start_ttfb: Starts the service's time-to-first-byte measurement.
        gemini_3: The model is Gemini 3.x (inference on a completed turn needs realtime input;
            a fresh session after a reconnect gets no answer to its history).
        mid_session_client_content: The model takes ``clientContent`` mid-session.
        inference_on_init: Have the model answer the initial history (the greeting).
    """

    def __init__(
        self,
        conn: LiveConnection,
        caller_input: CallerInput,
        *,
        invocation_params: InvocationParams,
        send_error: Callable[[Exception], Awaitable[None]],
        start_ttfb: Callable[[], Awaitable[None]],
        gemini_3: bool,
        mid_session_client_content: bool,
        inference_on_init: bool,
    ) -> None:
        self._conn = conn
        self._input = caller_input
        self._invocation_params = invocation_params
        self._send_error = send_error
        self._start_ttfb = start_ttfb
        self._gemini_3 = gemini_3
        self._client_content_mid_session = mid_session_client_content
        self._inference_on_init = inference_on_init
        self.context: LLMContext | None = None
        self._run_when_ready = False
        self._needs_turn_complete = False  # 2.5 seeded without inference (see seed)

    async def context_frame(self, context: LLMContext) -> None:
        """The pipeline's context arrived; the first one is seeded."""
        first = self.context is None
        self.context = context
        if first:
            await self.seed()

    async def session_ready(self, resumed: bool) -> None:
        """A Live API session is ready: seed it, unless the server restored the session."""
        if self._run_when_ready and self.context is not None:
            self._run_when_ready = False
            await self.seed()
        elif resumed:
            self._input.ready = True  # the server restored the session
        elif self.context is not None:
            await self.seed(for_reconnect=True)

    async def caller_turn_ended(self) -> None:
        """After a caller turn: Gemini 2.5 seeded without inference gets its completed turn."""
        if self._needs_turn_complete and self._conn.session is not None:
            self._needs_turn_complete = False
            # Gemini 2.5 ignores history seeded without a completed turn otherwise.
            try:
                await self._conn.send_client_content(turn_complete=True)
            except Exception as e:
                await self._send_error(e)

    async def seed(self, *, for_reconnect: bool = False) -> None:
        """Send the context's history; the session then takes realtime input.

        A first connection has the model answer it when ``inference_on_init`` (the greeting).
        A fresh session after a reconnect: Gemini 2.5 answers it (a recap; otherwise it acts
        as if it forgot everything on the next caller turn), 3.x does not.
        """
        if self._conn.closing:
            return
        if self._conn.session is None or self.context is None:
            self._run_when_ready = True
            return
        params = await self._invocation_params(self.context)
        messages: list[Any] = list(params.get("messages", []))
        if not messages:
            self._input.ready = True
            return
        trigger = (not self._gemini_3) if for_reconnect else self._inference_on_init
        if not self._gemini_3 and getattr(messages[-1], "role", None) != "user":
            messages.append(Content(role="user", parts=[Part(text=" ")]))  # 2.5 needs a user turn
        await self._start_ttfb()
        try:
            # direct: sent from on_ready too, before the connection re-sends and goes live
            await self._conn.send_client_content(turns=messages, turn_complete=trigger, direct=True)
            if self._gemini_3 and trigger:
                # Gemini 3.x runs inference on a completed turn only after realtime input.
                await self._conn.send_realtime_input(text=" ", direct=True)
        except Exception as e:
            await self._send_error(e)
        if not trigger and not self._gemini_3:
            self._needs_turn_complete = True
        self._input.ready = True

    async def instruct(self, text: str) -> bool:
        """Give the model an instruction and have it answer now (``CallGeminiLive.instruct``).

        A completed client turn, or realtime text on models that refuse mid-session
        ``clientContent`` (the model table's ``mid_session_client_content``).

        Returns:
            False when it was not sent: no open session, or (realtime text) the session's
            initial history has not been sent yet.
        """
        conn = self._conn
        if conn.session is None or conn.closing:
            return False
        try:
            if not self._client_content_mid_session:
                # clientContent would close the session (1007): only the initial history
                # may use it. Realtime text is a caller turn the model answers at once; not
                # before that history was sent, which would then be refused.
                if not self._input.ready:
                    return False
                return await conn.send_realtime_input(text=text)
            turn = Content(role="user", parts=[Part(text=text)])
            await conn.send_client_content(turns=[turn], turn_complete=True)
            if self._gemini_3:
                # Gemini 3.x runs inference on a completed turn only after realtime input.
                await conn.send_realtime_input(text=" ")
        except Exception as e:
            await self._send_error(e)
            return False
        return True

    async def caller_text(self, text: str) -> bool:
        """Text the caller typed, a caller turn (``CallGeminiLive.caller_text``).

        Realtime text, which every model takes mid-session and answers like the caller's
        speech; like caller audio, it is kept during a handover or reconnect and re-sent on
        the next connection until a resumption handle holds it (``connection``, ``resend``).

        Returns:
            False when it was neither sent nor kept: no session yet, the session's initial
            history not sent yet, or the call ending.
        """
        conn = self._conn
        if conn.closing or (conn.live and not self._input.ready):
            return False
        try:
            return await conn.send_realtime_input(text=text)
        except Exception as e:
            await self._send_error(e)
            return False
