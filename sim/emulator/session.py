"""One Live API session: setup, replies, barge-in, tool calls, faults (input: ``caller_input``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import WSMsgType, web
from loguru import logger

from sim.emulator import caller_input, resumption, tools, voices, wire
from sim.emulator import protocol as p
from sim.emulator.config import ToolScript
from sim.emulator.conversation import Conversation, cancel_and_wait
from sim.emulator.faults import fault_timer
from sim.emulator.misbehaviour import MISBEHAVIOURS, Misbehaviour, phantom_interrupt
from sim.emulator.schema import INVALID_ARGUMENT, Rejection, SetupInfo, validate_setup
from sim.emulator.vad import TurnDetector

if TYPE_CHECKING:
    from sim.emulator.server import LiveEmulator


class LiveSession:
    """Serves one BidiGenerateContent WebSocket.

    Args:
        emu: The emulator (config, faults, recorder, handle store).
        ws: The prepared WebSocket.
        session_id: Id used in records and logs.
        api_version: ``v1``, ``v1beta`` or ``v1alpha`` from the path.
        api_key: The key from the header or ``?key=`` (may be empty).
    """

    def __init__(
        self,
        emu: LiveEmulator,
        ws: web.WebSocketResponse,
        session_id: str,
        api_version: str,
        api_key: str,
    ) -> None:
        self.emu = emu
        self.ws = ws
        self.id = session_id
        self.api_version = api_version
        self.api_key = api_key
        self.info: SetupInfo | None = None
        self.conv = Conversation()
        self.close_code: int | None = None
        self.close_reason = ""
        self.accepted = False
        self._vad: TurnDetector | None = None
        self._manual_active = False
        self._manual: list[bytes] = []
        self._manual_rate = p.DEFAULT_INPUT_RATE_HZ
        self._reply_task: asyncio.Task[None] | None = None
        self._fault_task: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[Any] | None = None
        self._streaming = False
        self._sent_secs = 0.0
        self._last_trigger = -1e9
        self._pending_tools: dict[str, str] = {}
        self._replies_started = 0
        faults = emu.faults
        self._misb = Misbehaviour({k: getattr(faults, k) for k in MISBEHAVIOURS}, faults.seed,
                                  session_id)  # fmt: skip
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.client_messages = 0  # on this connection, setup included
        self._realtime_seen = False
        self._pending_input: str | None = None
        self._loop = asyncio.get_running_loop()

    @property
    def cfg(self) -> Any:
        """The emulator's `EmulatorConfig`."""
        return self.emu.config

    async def run(self) -> None:
        """Serve until either side closes."""
        try:
            await self._accept_setup()
            async for msg in self.ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                await self._on_message(msg.data)
        except Rejection as rej:
            logger.info("emulator {}: closing {} ({})", self.id, rej.code, rej.detail)
            await self.close(rej.code, rej.reason)
        except (ConnectionError, RuntimeError) as exc:
            logger.debug("emulator {}: connection lost: {!r}", self.id, exc)
        finally:
            for side in list(self._side_tasks):
                await cancel_and_wait(side)
            await cancel_and_wait(self._reply_task)
            # A close the fault timer is making finishes; a timer still sleeping towards its
            # next step is cancelled at once (waiting for it held every rejected session's
            # teardown for 5 s).
            fault_task = self._fault_task
            if self._closer is fault_task and fault_task is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fault_task), 5.0)
            await cancel_and_wait(self._fault_task)

    async def close(self, code: int, reason: str) -> None:
        """Close the socket the way the service does (reason cut to 123 bytes)."""
        if self.close_code is not None:
            return
        self.close_code, self.close_reason = code, reason
        self._closer = asyncio.current_task()
        if self._reply_task is not asyncio.current_task():
            await cancel_and_wait(self._reply_task)
        self.emu.closes.append((self.id, code, reason))
        await self.ws.close(code=code, message=p.close_reason(reason))

    async def send(self, data: bytes) -> None:
        """Send one pre-encoded server message as a text frame."""
        await self.ws.send_frame(data, WSMsgType.TEXT)

    async def _accept_setup(self) -> None:
        msg = await self.ws.receive()
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            raise ConnectionError("closed before setup")
        obj = self._parse(msg.data)
        setup = obj.get("setup") if isinstance(obj, dict) else None
        if setup is None:
            raise Rejection(1007, INVALID_ARGUMENT, "first message is not setup")
        if not self.api_key:
            raise Rejection(1008, p.MISSING_KEY, "no API key (x-goog-api-key or ?key=)")
        if self.cfg.api_key is not None and self.api_key != self.cfg.api_key:
            raise Rejection(1007, p.BAD_KEY, "API key does not match --api-key")
        info = validate_setup(setup, self.api_version)
        faults = self.emu.faults
        if faults.max_sessions is not None and self.emu.active_sessions >= faults.max_sessions:
            raise Rejection(1011, p.QUOTA_EXCEEDED, f"quota of {faults.max_sessions} sessions")
        if self.emu.closes and self.emu.refused_connects < faults.refuse_connects:
            self.emu.refused_connects += 1
            raise Rejection(1011, p.UNAVAILABLE, f"fault: reconnect {self.emu.refused_connects} "
                            f"of {faults.refuse_connects} refused")  # fmt: skip
        if info.resume_handle:
            restored = self.emu.restore_handle(info.resume_handle)
            if restored is None:
                raise Rejection(1008, p.SESSION_NOT_FOUND, "unknown or stale resumption handle")
            if resumption.still_open(restored[1]):
                raise Rejection(1011, resumption.RESUME_WHILE_OPEN_REASON,
                                "resumed while the handle's connection is still open")  # fmt: skip
            self.conv = restored[0]
        if self.conv.started_at is None:
            self.conv.started_at = time.monotonic()
        delay = faults.setup_delay or self.cfg.setup_ms / 1000 * self.cfg.time_scale
        early = await self._hold_setup(delay) if delay > 0 else []
        self.info = info
        self.accepted = True
        self.emu.session_accepted(self)
        logger.info("emulator {}: session started ({}, {})", self.id, info.model.name,
                    self.api_version)  # fmt: skip
        await self.send(p.SETUP_COMPLETE)
        await self._send_resumption()
        self._fault_task = asyncio.create_task(fault_timer(self), name=f"emulator:{self.id}:faults")
        for data in early:
            await self._on_message(data)

    async def _hold_setup(self, secs: float) -> list[str | bytes]:
        """Sit on the setup for ``secs`` (the ``setup_delay`` fault), as a slow service does.

        A client that leaves meanwhile ends the wait (the service drops a setup nobody waits
        for; sleeping on held a stopped emulator for the rest of the delay). Messages sent before
        ``setupComplete`` are kept and served after it.
        """
        early: list[str | bytes] = []
        deadline = self._loop.time() + secs
        while (remaining := deadline - self._loop.time()) > 0:
            try:
                msg = await self.ws.receive(timeout=remaining)
            except TimeoutError:
                break
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                raise ConnectionError("closed during the setup delay")
            early.append(msg.data)
        return early

    def _parse(self, data: str | bytes) -> Any:
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise Rejection(1007, f"Invalid JSON payload received. {exc}", "bad JSON") from exc
        self.emu.recorder.record(self.id, obj)
        self.client_messages += 1
        return obj

    async def _on_message(self, data: str | bytes) -> None:
        obj = self._parse(data)
        if not isinstance(obj, dict):
            raise Rejection(1007, INVALID_ARGUMENT, "message is not an object")
        for key, body in obj.items():
            if key in ("realtime_input", "realtimeInput"):
                self._realtime_seen = True
                await caller_input.on_realtime(self, body)
            elif key in ("client_content", "clientContent"):
                await caller_input.on_client_content(self, body)
            elif key in ("tool_response", "toolResponse"):
                await tools.on_tool_response(self, body)
            elif key == "setup":
                raise Rejection(1007, INVALID_ARGUMENT, "second setup message")
            else:
                raise Rejection(
                    1007, f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
                )

    # Replies

    def _audio(self, kind: str, samples: np.ndarray | None = None, rate: int = 0) -> Any:
        cfg = self.cfg
        if cfg.voice == "tone":
            return voices.tone_reply(cfg.tone_secs, cfg.chunk_ms)
        if kind == "goodbye":
            return voices.wav_reply(cfg.greeting_wav, cfg.chunk_ms, cfg.goodbye_secs)
        if kind == "answer" and cfg.voice == "echo" and samples is not None:
            return voices.echo_reply(samples, rate, cfg.chunk_ms)
        if kind == "greeting" or cfg.voice == "echo":
            return voices.wav_reply(cfg.greeting_wav, cfg.chunk_ms)
        return voices.wav_reply(cfg.answer_wav, cfg.chunk_ms)

    def _reply_to_turn(self, audio: voices.ReplyAudio) -> None:
        assert self.info is not None
        turn = self.conv.caller_turns
        if self._misb.happens("empty_turn", turn):
            self._start_reply(None)  # a bare turnComplete
            return
        for script in self.cfg.tool_scripts:
            if script.after_turn == turn and script.name in self.info.tool_names:
                self._start_reply(audio, tool=script)
                return
        self._start_reply(audio)
        if self._misb.happens("phantom_interrupt", turn) and self._reply_task is not None:
            side = asyncio.create_task(phantom_interrupt(self, self._reply_task),
                                       name=f"emulator:{self.id}:phantom")  # fmt: skip
            self._side_tasks.add(side)
            side.add_done_callback(self._side_tasks.discard)

    def _start_reply(
        self,
        audio: voices.ReplyAudio | None,
        *,
        tool: ToolScript | None = None,
        after_tool: bool = False,
    ) -> None:
        if self._misb.frozen:
            logger.debug("emulator {}: fault: frozen since an interruption; no reply", self.id)
            return
        previous = self._reply_task
        self._last_trigger = self._loop.time()
        self._replies_started += 1
        self._reply_task = asyncio.create_task(
            self._reply(previous, audio, tool, after_tool),
            name=f"emulator:{self.id}:reply-{self._replies_started}",
        )

    async def _barge_in(self, *, force: bool = False, cancel_tools: bool = True) -> None:
        """Caller activity: stop a reply (``interrupted`` + ``turnComplete`` if audio began).

        Tool calls still pending are cancelled (``toolCallCancellation``) unless
        ``cancel_tools`` is false.
        """
        assert self.info is not None
        if cancel_tools and self._pending_tools and (self.info.barge_in or force):
            ids = list(self._pending_tools)
            self._pending_tools.clear()
            await self.send(tools.cancellation(ids))
        task = self._reply_task
        if task is None or task.done() or not (self.info.barge_in or force):
            return
        streaming, sent = self._streaming, self._sent_secs
        await cancel_and_wait(task)
        self._reply_task = None
        if streaming:
            self._streaming = False
            self._finish_reply_bookkeeping(sent, interrupted=True)
            await self.send(p.INTERRUPTED)
            await self.send(self._turn_complete(sent))
            if self._misb.happens("freeze_after_interrupt", self.conv.caller_turns):
                logger.debug("emulator {}: fault: frozen after an interruption", self.id)
                self._misb.frozen = True
            await self._send_resumption()

    async def _reply(
        self,
        previous: asyncio.Task[None] | None,
        audio: voices.ReplyAudio | None,
        tool: ToolScript | None,
        after_tool: bool,
    ) -> None:
        try:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            await asyncio.sleep(self.cfg.think_ms / 1000 * self.cfg.time_scale)
            assert self.info is not None
            if self.info.resumption:
                await self.send(p.resumption_update(None))
            if tool is not None:
                await tools.run_tool_call(self, tool, audio)
            elif audio is None:  # fault: an empty turn
                self._finish_reply_bookkeeping(0.0, interrupted=False)
                await self.send(self._turn_complete(0.0))
                await self._send_resumption()
            else:
                await self._stream(audio, after_tool)
        except (ConnectionError, RuntimeError) as exc:
            logger.debug("emulator {}: reply stopped, connection lost: {!r}", self.id, exc)

    async def _stream(self, audio: voices.ReplyAudio, after_tool: bool) -> None:
        await wire.stream_reply(self, audio, after_tool)

    def _finish_reply_bookkeeping(self, secs: float, *, interrupted: bool) -> None:
        self.conv.replies += 1
        note = " interrupted" if interrupted else ""
        self.conv.history.append(f"model: [audio {secs:.2f} s{note}]")

    def _usage(self, reply_secs: float, *, count: bool = True) -> dict[str, Any]:
        """``usageMetadata`` for a reply of ``reply_secs``; ``count`` adds it to the context."""
        assert self.info is not None
        prompt_text = self.info.system_tokens + self.conv.context_text_tokens
        body = p.usage(self.conv.context_audio_secs, prompt_text, reply_secs)
        if count:
            self.conv.context_audio_secs += reply_secs
        return body

    def _turn_complete(self, reply_secs: float) -> bytes:
        return p.encode({"serverContent": dict(p.TURN_COMPLETE_FIELDS),
                         "usageMetadata": self._usage(reply_secs)})  # fmt: skip

    async def _send_resumption(self) -> None:
        if self.info is None or not self.info.resumption or self.close_code is not None:
            return
        if self._pending_tools:
            return
        handle = secrets.token_urlsafe(24)
        self.emu.store_handle(handle, self.conv.copy(), self)
        await self.send(resumption.update_message(handle, self.client_messages - 1))
