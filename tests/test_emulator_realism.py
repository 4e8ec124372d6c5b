"""The emulator behaves like today's Gemini, seen through the unmodified google-genai SDK.

Line noise does not fool its VAD; it misbehaves on demand (missed barge-in, phantom
``interrupted``, a freeze after ``interrupted``, empty turns); connection and session limits
are on by default and scale with ``time_scale``; resumption handles are renewed per turn and
refused while their connection is open; tools are announced, cancelled and scheduled.
"""

from __future__ import annotations

import asyncio
import audioop
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
import soxr
from google import genai
from google.genai import errors, types

from sim.emulator import EmulatorConfig, FaultPlan, LiveEmulator, ToolScript
from sim.testing import caller_hello_16k
from sim.testing import genai_client as client
from tests.test_emulator_sdk import CONFIG

pytestmark = pytest.mark.e2e
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

MODEL = "gemini-3.8-live"
# A reply that streams for about a second (2 s of tone at twice real time).
TALKY = dict(think_ms=20, voice="tone", tone_secs=2.0, pace=2.0, wait_playback=False)
FAST = dict(think_ms=20, voice="tone", tone_secs=0.5, pace=0.0, wait_playback=False)


def line_noise(secs: float, dbfs: float, *, pink: bool = True, seed: int = 7) -> np.ndarray:
    """Phone-line noise as the server sends it: made at 8 kHz, mu-law'd, upsampled to 16 kHz."""
    rng = np.random.default_rng(seed)
    n = int(secs * 8000)
    noise = rng.standard_normal(n)
    if pink:
        spectrum = np.fft.rfft(noise)
        freqs = np.arange(spectrum.size, dtype=np.float64)
        freqs[0] = 1.0
        noise = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    noise *= 10 ** (dbfs / 20) * 32768 / np.sqrt(np.mean(noise**2))
    return phone_16k(noise)


def phone_16k(signal_8k: np.ndarray) -> np.ndarray:
    """An 8 kHz signal through G.711 mu-law, then up to 16 kHz PCM16."""
    pcm = np.clip(signal_8k, -32768, 32767).astype(np.int16).tobytes()
    decoded = np.frombuffer(audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2), np.int16)
    up = soxr.resample(decoded.astype(np.float32) / 32768, 8000, 16000)
    return (np.clip(up, -1, 1) * 32767).astype(np.int16)


def speech_over_noise(dbfs: float = -45.0, seed: int = 3) -> np.ndarray:
    """caller_hello.wav with line noise under it and 0.8 s of noise after it."""
    speech = caller_hello_16k()
    noise = line_noise(speech.size / 16000 + 0.8, dbfs, seed=seed)
    out = noise.astype(np.int32)
    out[: speech.size] += speech
    return np.clip(out, -32768, 32767).astype(np.int16)


async def send_pcm(session: genai.live.AsyncSession, pcm: np.ndarray, chunk_ms: int = 40) -> None:
    step = 16 * chunk_ms
    for i in range(0, pcm.size, step):
        blob = types.Blob(data=pcm[i : i + step].tobytes(), mime_type="audio/pcm;rate=16000")
        await session.send_realtime_input(audio=blob)


class Inbox:
    """Every server message of a session, collected in the background."""

    def __init__(self, session: genai.live.AsyncSession) -> None:
        self.session = session
        self.messages: list[types.LiveServerMessage] = []
        self.error: BaseException | None = None
        self._task = asyncio.create_task(self._run(), name="test:inbox")

    async def _run(self) -> None:
        try:
            while True:
                async for message in self.session.receive():
                    self.messages.append(message)
        except errors.APIError as exc:
            self.error = exc

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def until(self, predicate: Callable[[], bool], timeout_secs: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_secs
        while not predicate():
            assert time.monotonic() < deadline, f"timed out; saw {self.events()}"
            await asyncio.sleep(0.01)

    def events(self) -> list[str]:
        """One word per message: audio, interrupted, generation, turn, tool, cancel, handle..."""
        out = []
        for m in self.messages:
            sc = m.server_content
            if m.tool_call:
                out.append("tool")
            if m.tool_call_cancellation:
                out.append("cancel")
            if m.go_away:
                out.append("goaway")
            if m.session_resumption_update:
                out.append("handle" if m.session_resumption_update.resumable else "busy")
            if sc is None:
                continue
            if sc.model_turn and any(p.inline_data for p in sc.model_turn.parts or []):
                if not out or out[-1] != "audio":
                    out.append("audio")
            for flag in ("interrupted", "generation_complete", "turn_complete"):
                if getattr(sc, flag):
                    out.append(flag.split("_")[0])
        return out

    def count(self, event: str) -> int:
        return self.events().count(event)

    def handles(self) -> list[types.LiveServerSessionResumptionUpdate]:
        return [
            m.session_resumption_update
            for m in self.messages
            if m.session_resumption_update and m.session_resumption_update.resumable
        ]


@pytest.fixture
async def emu(request: pytest.FixtureRequest) -> AsyncIterator[LiveEmulator]:
    kwargs = dict(getattr(request, "param", {}))
    config = EmulatorConfig(**{**FAST, **kwargs.pop("config", {})})
    async with LiveEmulator(config, kwargs.pop("faults", None)) as emulator:
        yield emulator


def emu_with(**kwargs: Any) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("emu", [kwargs], indirect=True, ids=["emu"])


def with_resumption(config: types.LiveConnectConfig, **kwargs: Any) -> types.LiveConnectConfig:
    resumption = types.SessionResumptionConfig(**kwargs)
    return config.model_copy(update={"session_resumption": resumption})


# VAD --------------------------------------------------------------------------------------


async def test_line_noise_never_starts_a_turn_but_speech_over_it_does(emu: LiveEmulator) -> None:
    async with client(emu).aio.live.connect(model=MODEL, config=CONFIG) as session:
        inbox = Inbox(session)
        await send_pcm(session, line_noise(8.0, -40.0))  # the loud end of a real line
        await send_pcm(session, line_noise(8.0, -45.0, pink=False))
        await asyncio.sleep(0.3)
        assert inbox.events() == []
        await send_pcm(session, speech_over_noise())
        await inbox.until(lambda: "turn" in inbox.events())
        await inbox.stop()
    heard = "".join(
        m.server_content.input_transcription.text or ""
        for m in inbox.messages
        if m.server_content and m.server_content.input_transcription
    )
    assert heard.startswith("[caller audio 2.")  # one utterance, not the noise
    assert inbox.events()[-2:] == ["generation", "turn"]


@emu_with(config=TALKY)
async def test_barge_in_over_line_noise_interrupts(emu: LiveEmulator) -> None:
    async with client(emu).aio.live.connect(model=MODEL, config=CONFIG) as session:
        inbox = Inbox(session)
        await send_pcm(session, speech_over_noise())
        await inbox.until(lambda: "audio" in inbox.events())
        await send_pcm(session, speech_over_noise(seed=4))
        await inbox.until(lambda: "interrupted" in inbox.events())
        await inbox.stop()
    assert inbox.events()[:3] == ["audio", "interrupted", "turn"]


# Misbehaviour -----------------------------------------------------------------------------


@emu_with(config=TALKY, faults=FaultPlan(missed_bargein="turn:1"))
async def test_missed_barge_in_plays_on_then_answers(emu: LiveEmulator) -> None:
    async with client(emu).aio.live.connect(model=MODEL, config=CONFIG) as session:
        inbox = Inbox(session)
        await send_pcm(session, speech_over_noise())
        await inbox.until(lambda: "audio" in inbox.events())
        await send_pcm(session, speech_over_noise(seed=4))  # talks over the bot: not noticed
        await inbox.until(lambda: inbox.count("turn") == 2, 8.0)
        await inbox.stop()
    events = [e for e in inbox.events() if e not in ("busy", "handle")]
    assert events == ["audio", "generation", "turn", "audio", "generation", "turn"]


@emu_with(config=TALKY, faults=FaultPlan(phantom_interrupt="turn:1"))
async def test_phantom_interrupted_mid_reply_with_no_caller_speech(emu: LiveEmulator) -> None:
    async with client(emu).aio.live.connect(model=MODEL, config=CONFIG) as session:
        inbox = Inbox(session)
        await send_pcm(session, speech_over_noise())
        await inbox.until(lambda: "turn" in inbox.events())
        audio_bytes = sum(len(m.data or b"") for m in inbox.messages)
        await send_pcm(session, line_noise(2.0, -45.0))  # only noise from the caller
        await asyncio.sleep(0.3)
        await inbox.stop()
    events = [e for e in inbox.events() if e not in ("busy", "handle")]
    assert events == ["audio", "interrupted", "turn"]
    assert 1.0 <= audio_bytes / 48_000 < 2.0  # cut after ~1 s of the 2 s reply


@emu_with(config=TALKY, faults=FaultPlan(freeze_after_interrupt="turn:1"))
async def test_freeze_after_interrupted_until_a_new_connection(emu: LiveEmulator) -> None:
    cfg = with_resumption(CONFIG)
    async with client(emu).aio.live.connect(model=MODEL, config=cfg) as session:
        inbox = Inbox(session)
        await send_pcm(session, speech_over_noise())
        await inbox.until(lambda: "audio" in inbox.events())
        await send_pcm(session, speech_over_noise(seed=4))  # barge-in: interrupted, then frozen
        await inbox.until(lambda: "interrupted" in inbox.events())
        await session.send_realtime_input(text="hello? are you there?")
        await asyncio.sleep(1.0)
        await inbox.stop()
        handle = inbox.handles()[-1].new_handle
    after = inbox.events()[inbox.events().index("interrupted") :]
    assert "audio" not in after and after.count("turn") == 1  # nothing answered the caller
    assert emu.closes == []  # the socket stayed open, no error
    resumed = with_resumption(CONFIG, handle=handle)
    async with client(emu).aio.live.connect(model=MODEL, config=resumed) as session:
        inbox = Inbox(session)
        await session.send_realtime_input(text="hello?")
        await inbox.until(lambda: "turn" in inbox.events())
        await inbox.stop()
    assert "audio" in inbox.events()  # a new connection answers again


@emu_with(faults=FaultPlan(empty_turn="turn:2"))
async def test_empty_turn_is_a_bare_turn_complete(emu: LiveEmulator) -> None:
    async with client(emu).aio.live.connect(model=MODEL, config=CONFIG) as session:
        inbox = Inbox(session)
        await session.send_realtime_input(text="first")
        await inbox.until(lambda: inbox.count("turn") == 1)
        await session.send_realtime_input(text="second")
        await inbox.until(lambda: inbox.count("turn") == 2)
        await inbox.stop()
    second = inbox.events()[inbox.events().index("turn") + 1 :]
    assert second == ["turn"]
    last = [m for m in inbox.messages if m.server_content and m.server_content.turn_complete][-1]
    assert not last.server_content.model_turn
    assert last.usage_metadata is None or not last.usage_metadata.response_token_count


# Limits -----------------------------------------------------------------------------------


@emu_with(config={"time_scale": 0.004})  # 600 s -> 2.4 s, goAway lead 60 s -> 0.24 s
async def test_connection_limit_is_on_by_default_and_scales(emu: LiveEmulator) -> None:
    start = time.monotonic()
    async with client(emu).aio.live.connect(model=MODEL, config=CONFIG) as session:
        inbox = Inbox(session)
        await inbox.until(lambda: inbox.error is not None, 5.0)
    elapsed = time.monotonic() - start
    go_away = [m.go_away for m in inbox.messages if m.go_away]
    assert len(go_away) == 1
    left = go_away[0].time_left
    assert left == "0.24s" or left.total_seconds() == pytest.approx(0.24)
    assert isinstance(inbox.error, errors.APIError)
    assert (inbox.error.code, inbox.error.details) == (
        1011,
        "Deadline expired before operation could complete.",
    )
    assert 2.3 < elapsed < 3.5


@emu_with(config={"time_scale": 0.002, "connection_secs": None, "session_limit_code": 1008})
async def test_session_limit_without_compression_counts_across_resumption(
    emu: LiveEmulator,
) -> None:
    # 15 min -> 1.8 s of session, wherever its connections begin and end.
    cfg = with_resumption(CONFIG)
    async with client(emu).aio.live.connect(model=MODEL, config=cfg) as session:
        inbox = Inbox(session)
        await session.send_realtime_input(text="hi")
        await inbox.until(lambda: bool(inbox.handles()))
        await inbox.stop()
    await asyncio.sleep(0.6)
    resumed = with_resumption(CONFIG, handle=inbox.handles()[-1].new_handle)
    start = time.monotonic()
    async with client(emu).aio.live.connect(model=MODEL, config=resumed) as session:
        inbox = Inbox(session)
        await inbox.until(lambda: inbox.error is not None, 3.0)
    assert time.monotonic() - start < 1.5  # only what the first connection left
    assert "goaway" in inbox.events()
    assert isinstance(inbox.error, errors.APIError) and inbox.error.code == 1008  # configurable
    compressed = CONFIG.model_copy(
        update={"context_window_compression": types.ContextWindowCompressionConfig(
            trigger_tokens=20000, sliding_window=types.SlidingWindow())}
    )  # fmt: skip
    async with client(emu).aio.live.connect(model=MODEL, config=compressed) as session:
        inbox = Inbox(session)
        await asyncio.sleep(2.5)  # past the limit: compression lifts it
        await session.send_realtime_input(text="still there?")
        await inbox.until(lambda: "turn" in inbox.events())
        await inbox.stop()
    assert inbox.error is None and "goaway" not in inbox.events()


# Resumption -------------------------------------------------------------------------------


async def test_handles_renewed_per_turn_each_resuming_its_own_context(emu: LiveEmulator) -> None:
    cfg = with_resumption(CONFIG)
    async with client(emu).aio.live.connect(model=MODEL, config=cfg) as session:
        inbox = Inbox(session)
        for turn in range(1, 3):
            await session.send_realtime_input(text=f"question {turn}")
            await inbox.until(lambda turn=turn: len(inbox.handles()) == turn + 1)
        await inbox.stop()
    # A handle at setup and after each completed turn; none while the model generates.
    turn = ["busy", "audio", "generation", "turn", "handle"]
    assert inbox.events() == ["handle", *turn, *turn]
    indexes = [h.last_consumed_client_message_index for h in inbox.handles()]
    assert indexes == [0, 1, 2]  # setup, then one text message per turn
    first, second = (h.new_handle for h in inbox.handles()[1:])

    async def prompt_after(handle: str) -> int:
        resumed = with_resumption(CONFIG, handle=handle)
        async with client(emu).aio.live.connect(model=MODEL, config=resumed) as session:
            await session.send_realtime_input(text="again")
            box = Inbox(session)
            await box.until(lambda: "turn" in box.events())
            await box.stop()
        return max(m.usage_metadata.prompt_token_count or 0 for m in box.messages
                   if m.usage_metadata)  # fmt: skip

    # Each handle holds the context it was issued for: the later one includes one more turn.
    assert await prompt_after(second) > await prompt_after(first)


async def test_resume_while_the_old_connection_is_open_is_refused(emu: LiveEmulator) -> None:
    cfg = with_resumption(CONFIG)
    async with client(emu).aio.live.connect(model=MODEL, config=cfg) as session:
        inbox = Inbox(session)
        await inbox.until(lambda: bool(inbox.handles()))
        resumed = with_resumption(CONFIG, handle=inbox.handles()[-1].new_handle)
        with pytest.raises(errors.APIError) as info:
            async with client(emu).aio.live.connect(model=MODEL, config=resumed):
                pass
        await inbox.stop()
    assert (info.value.code, info.value.details) == (1011, "Internal error encountered.")


# Tools ------------------------------------------------------------------------------------


def tool_config(
    name: str, behavior: types.Behavior | None = None, instruction: str | None = None
) -> types.LiveConnectConfig:
    decl = types.FunctionDeclaration(name=name, description="d", behavior=behavior)
    update: dict[str, Any] = {"tools": [types.Tool(function_declarations=[decl])]}
    if instruction:
        update["system_instruction"] = instruction
    return with_resumption(CONFIG).model_copy(update=update)


@emu_with(config={**TALKY, "tool_scripts": (ToolScript(after_turn=1, name="transfer_call"),)})
async def test_announced_tool_call_speaks_first(emu: LiveEmulator) -> None:
    announced = "You are a receptionist. Before calling transfer_call, tell the caller."
    cfg = tool_config("transfer_call", instruction=announced)
    async with client(emu).aio.live.connect(model=MODEL, config=cfg) as session:
        inbox = Inbox(session)
        await session.send_realtime_input(text="put me through please")
        await inbox.until(lambda: "tool" in inbox.events())
        assert inbox.events() == ["handle", "busy", "audio", "tool"]  # no turnComplete yet
        call = next(m.tool_call for m in inbox.messages if m.tool_call).function_calls[0]
        await session.send_tool_response(
            function_responses=[types.FunctionResponse(id=call.id, name=call.name, response={})]
        )
        await inbox.until(lambda: inbox.events()[-1] == "handle")
        await inbox.stop()
    assert inbox.events()[4:] == ["busy", "audio", "generation", "turn", "handle"]
    plain = tool_config("transfer_call", instruction="You are a receptionist.")
    async with client(emu).aio.live.connect(model=MODEL, config=plain) as session:
        inbox = Inbox(session)
        await session.send_realtime_input(text="put me through please")
        await inbox.until(lambda: "tool" in inbox.events())
        await inbox.stop()
    assert inbox.events() == ["handle", "busy", "tool"]  # not announced: the call alone


@emu_with(config={**TALKY, "tool_scripts": (ToolScript(after_turn=1, name="end_call"),)})
async def test_barge_in_on_a_pending_tool_call_cancels_it(emu: LiveEmulator) -> None:
    async with client(emu).aio.live.connect(model=MODEL, config=tool_config("end_call")) as session:
        inbox = Inbox(session)
        await session.send_realtime_input(text="bye")
        await inbox.until(lambda: "tool" in inbox.events())
        call = next(m.tool_call for m in inbox.messages if m.tool_call).function_calls[0]
        await send_pcm(session, speech_over_noise())  # the caller talks before the response
        await inbox.until(lambda: "cancel" in inbox.events())
        cancelled = next(m for m in inbox.messages if m.tool_call_cancellation)
        await session.send_tool_response(  # too late: ignored
            function_responses=[types.FunctionResponse(id=call.id, name=call.name, response={})]
        )
        await inbox.until(lambda: "turn" in inbox.events())  # the caller's turn is answered
        await asyncio.sleep(0.5)
        await inbox.stop()
    assert cancelled.tool_call_cancellation.ids == [call.id]
    assert inbox.count("turn") == 1  # the late response got no reply of its own


@pytest.mark.parametrize(
    ("scheduling", "expected"),
    [
        # the ordinary answer plays on; nothing is said about the result
        ("SILENT", ["tool", "audio", "generation", "turn", "handle"]),
        # the answer to the result comes after the current reply
        ("WHEN_IDLE", ["tool", "audio", "generation", "turn", "handle", "busy", "audio",
                       "generation", "turn"]),
        # the current reply stops and the result is answered at once
        ("INTERRUPT", ["tool", "audio", "interrupted", "turn", "handle", "busy", "audio",
                       "generation", "turn"]),
    ],
)  # fmt: skip
@emu_with(config={**TALKY, "tool_scripts": (ToolScript(after_turn=1, name="lookup"),)})
async def test_non_blocking_scheduling_is_honoured(
    emu: LiveEmulator, scheduling: str, expected: list[str]
) -> None:
    cfg = tool_config("lookup", types.Behavior.NON_BLOCKING)
    async with client(emu).aio.live.connect(model=MODEL, config=cfg) as session:
        inbox = Inbox(session)
        await session.send_realtime_input(text="look it up")
        await inbox.until(lambda: "audio" in inbox.events())  # the ordinary answer is playing
        call = next(m.tool_call for m in inbox.messages if m.tool_call).function_calls[0]
        response = types.FunctionResponse(
            id=call.id,
            name=call.name,
            response={"result": "42"},
            scheduling=types.FunctionResponseScheduling(scheduling),
        )
        await session.send_tool_response(function_responses=[response])
        await inbox.until(lambda: inbox.count("turn") == len([e for e in expected if e == "turn"]))
        await asyncio.sleep(0.3)
        await inbox.stop()
    events = inbox.events()
    assert events[events.index("tool") :][: len(expected)] == expected
