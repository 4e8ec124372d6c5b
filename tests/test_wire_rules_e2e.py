"""Per-model wire rules over loopback: the real SDK against the emulator, then whole calls.

The rules live in the model table (``pipelines/gemini_models.py``): 3.1 takes ``clientContent``
only as the initial history and refuses a null resumption handle; 3.x bundles parts,
transcripts and ``turnComplete`` and sends usage-only messages.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import numpy as np
import pytest
import websockets
from google.genai import errors, types

from sim.caller import CallPlan, place_call
from sim.emulator import EmulatorConfig, LiveEmulator
from sim.testing import audio_of, caller_hello_16k, collect_turn, send_speech, wait_until
from sim.testing import genai_client as client

pytestmark = pytest.mark.e2e
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

LEGACY = "gemini-3.1-flash-live-preview"
INVALID = (1007, "Request contains an invalid argument.")
CONFIG = types.LiveConnectConfig(
    response_modalities=[types.Modality.AUDIO],
    input_audio_transcription=types.AudioTranscriptionConfig(),
    output_audio_transcription=types.AudioTranscriptionConfig(),
    history_config=types.HistoryConfig(initial_history_in_client_content=True),
)
HELLO = types.Content(role="user", parts=[types.Part(text="Say hello")])


@pytest.fixture
async def emu() -> AsyncIterator[LiveEmulator]:
    config = EmulatorConfig(think_ms=20, pace=0.0, wait_playback=False, voice="echo")
    async with LiveEmulator(config) as emulator:
        yield emulator


async def test_31_takes_client_content_as_initial_history_then_only_realtime_text(
    emu: LiveEmulator,
) -> None:
    async with client(emu).aio.live.connect(model=LEGACY, config=CONFIG) as session:
        await session.send_client_content(turns=HELLO, turn_complete=True)
        await session.send_realtime_input(text=" ")  # Pipecat's 3.x nudge
        assert audio_of(await collect_turn(session))
        await session.send_realtime_input(text="Are you still there?")
        assert audio_of(await collect_turn(session))  # mid-session text: realtime input
        await session.send_client_content(turns=HELLO, turn_complete=True)
        with pytest.raises(errors.APIError) as info:
            await collect_turn(session)
    assert (info.value.code, info.value.details) == INVALID


async def test_31_refuses_client_content_after_realtime_input(emu: LiveEmulator) -> None:
    async with client(emu).aio.live.connect(model=LEGACY, config=CONFIG) as session:
        await send_speech(session, np.zeros(1600, np.int16))  # 100 ms of silence first
        await session.send_client_content(turns=HELLO, turn_complete=True)
        with pytest.raises(errors.APIError) as info:
            await collect_turn(session)
    assert (info.value.code, info.value.details) == INVALID


async def test_31_refuses_client_content_without_history_config(emu: LiveEmulator) -> None:
    config = CONFIG.model_copy(update={"history_config": None})
    async with client(emu).aio.live.connect(model=LEGACY, config=config) as session:
        await session.send_client_content(turns=HELLO, turn_complete=True)
        with pytest.raises(errors.APIError) as info:
            await collect_turn(session)
    assert (info.value.code, info.value.details) == INVALID


async def test_38_takes_client_content_at_any_time(emu: LiveEmulator) -> None:
    async with client(emu).aio.live.connect(model="gemini-3.8-live", config=CONFIG) as session:
        await session.send_realtime_input(text="hi")
        assert audio_of(await collect_turn(session))
        await session.send_client_content(turns=HELLO, turn_complete=True)
        assert audio_of(await collect_turn(session))


async def test_31_refuses_a_null_resumption_handle_but_takes_an_empty_one(
    emu: LiveEmulator,
) -> None:
    config = CONFIG.model_copy(update={"session_resumption": types.SessionResumptionConfig()})
    async with client(emu).aio.live.connect(model=LEGACY, config=config) as session:
        await session.send_realtime_input(text="hi")
        assert audio_of(await collect_turn(session))
    sent = emu.recordings["s1"][0]["msg"]["setup"]
    assert sent["sessionResumption"] == {}  # the SDK leaves a None handle out
    path = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    url = emu.url.replace("https", "wss") + path
    headers = {"x-goog-api-key": "k"}
    ssl_ctx = emu.client_ssl_context()
    async with websockets.connect(url, ssl=ssl_ctx, additional_headers=headers) as ws:
        setup = {"model": f"models/{LEGACY}", "sessionResumption": {"handle": None}}
        await ws.send(json.dumps({"setup": setup}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == INVALID


def _content(message: types.LiveServerMessage) -> types.LiveServerContent | None:
    return message.server_content


async def _reply_to_speech(emu: LiveEmulator, model: str) -> list[types.LiveServerMessage]:
    speech = caller_hello_16k()
    silence = np.zeros(16000, np.int16)
    async with client(emu).aio.live.connect(model=model, config=CONFIG) as session:
        await send_speech(session, np.concatenate([silence[:3200], speech, silence]))
        return await collect_turn(session)


async def test_3x_bundles_parts_transcripts_turn_end_and_sends_usage_only(
    emu: LiveEmulator,
) -> None:
    messages = await _reply_to_speech(emu, "gemini-3.8-live")
    audio = [i for i, m in enumerate(messages) if m.data]
    parts = [len(messages[i].server_content.model_turn.parts) for i in audio]
    assert max(parts) > 1  # several 80 ms parts in one message
    heard = [
        i for i, m in enumerate(messages) if _content(m) and m.server_content.input_transcription
    ]
    assert len(heard) > 1 and heard[0] >= audio[0]  # the caller's words after the reply began
    assert all(i in audio for i in heard)  # ... in the same messages as the audio
    said = [
        i for i, m in enumerate(messages) if _content(m) and m.server_content.output_transcription
    ]
    assert len(said) > 1 and all(i in audio for i in said)  # alongside the audio
    last = messages[-1]
    assert last.data and last.server_content.turn_complete and last.usage_metadata
    assert any(m.server_content is None and m.usage_metadata for m in messages)  # usage only


async def test_25_sends_one_part_per_message_and_transcripts_apart(emu: LiveEmulator) -> None:
    messages = await _reply_to_speech(emu, "gemini-2.5-flash-native-audio-latest")
    audio = [i for i, m in enumerate(messages) if m.data]
    assert all(len(messages[i].server_content.model_turn.parts) == 1 for i in audio)
    heard = [
        i for i, m in enumerate(messages) if _content(m) and m.server_content.input_transcription
    ]
    assert len(heard) > 1 and heard[-1] < audio[0]  # fragments, before the reply
    assert not messages[-1].data and messages[-1].server_content.turn_complete
    assert not any(m.server_content is None and m.usage_metadata for m in messages)


def _client_messages(emulator: LiveEmulator) -> list[dict]:
    return [r["msg"] for rs in emulator.recordings.values() for r in rs]


async def test_31_persona_greets_reprompts_and_says_goodbye(make_emulator, make_server) -> None:
    # The idle timer (legacy31.yaml: 2 s) and think time at a tenth; the audio in real time.
    emu = await make_emulator(EmulatorConfig(think_ms=300, time_scale=0.1))
    server = await make_server(emulator=emu, time_scale=0.1)
    result = await place_call(server.url, CallPlan().pause(30), to="+15005550031")

    assert result.ok, result.failure
    assert "1000" in result.end_reason, result.end_reason  # the bot hung up after its goodbye
    assert not [c for c in emu.closes if c[1] == 1007], emu.closes
    # Greeting, re-prompt and goodbye (3.9 s each from the emulator) were all played in full.
    assert result.clears == 0
    assert result.audio_played_secs > 11.0
    sent = _client_messages(emu)
    assert sent[0]["setup"]["model"] == f"models/{LEGACY}"
    assert "handle" not in sent[0]["setup"].get("sessionResumption", {})
    contents = [i for i, m in enumerate(sent) if "client_content" in m]
    realtime = [i for i, m in enumerate(sent) if "realtime_input" in m]
    assert len(contents) == 1 and contents[0] < realtime[0]  # the greeting: initial history
    texts = [m["realtime_input"].get("text", "") for m in sent if "realtime_input" in m]
    assert any("Are you still on the legacy line?" in t for t in texts)
    assert any("Goodbye from the legacy line." in t for t in texts)
    assert await wait_until(lambda: len(server.calls) == 0, 2.0)


async def test_38_bundled_replies_are_played_whole(make_emulator, make_server) -> None:
    emu = await make_emulator(EmulatorConfig(think_ms=300, voice="tone", tone_secs=2.0))
    server = await make_server(emulator=emu)
    plan = CallPlan().wait_for_greeting().say("caller_hello.wav").wait_for_reply().hangup()
    result = await place_call(server.url, plan)

    assert result.ok, result.failure
    assert len(result.response_latencies_ms) == 1
    # Greeting and reply are 2.0 s tones sent three parts a message: Pipecat alone would play
    # a third of them (parts[0]); every part reaches the caller, once, in order.
    assert result.audio_received_secs == pytest.approx(4.0, abs=0.1)
    assert result.clears == 0
    assert not [g for g in result.gaps_ms if g > 100], result.gaps_ms
