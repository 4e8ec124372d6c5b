"""The unmodified google-genai SDK against the Live API emulator over loopback TLS."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import soxr
from google.genai import errors, types

from pipelines.gemini_models import model_not_found_reason
from sim.emulator import EmulatorConfig, FaultPlan, LiveEmulator, ToolScript
from sim.testing import audio_of, caller_hello_16k, collect_turn, send_speech
from sim.testing import genai_client as client

pytestmark = pytest.mark.e2e
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

ASSETS = Path(__file__).resolve().parent.parent / "sim" / "assets"
FAST = dict(think_ms=20, pace=0.0, wait_playback=False)


@pytest.fixture
async def emu(request: pytest.FixtureRequest) -> AsyncIterator[LiveEmulator]:
    kwargs = dict(getattr(request, "param", {}))
    config = EmulatorConfig(**{**FAST, **kwargs.pop("config", {})})
    async with LiveEmulator(config, kwargs.pop("faults", None), **kwargs) as emulator:
        yield emulator


def emu_with(**kwargs: object) -> pytest.MarkDecorator:
    """Run a test against an emulator built with these LiveEmulator/EmulatorConfig arguments."""
    return pytest.mark.parametrize("emu", [kwargs], indirect=True, ids=["emu"])


CONFIG = types.LiveConnectConfig(
    response_modalities=[types.Modality.AUDIO],
    input_audio_transcription=types.AudioTranscriptionConfig(),
    output_audio_transcription=types.AudioTranscriptionConfig(),
)


async def test_text_turn_gets_greeting_audio_then_usage(emu: LiveEmulator) -> None:
    # 2.5 sends one part per message (3.x bundles: tests/test_model_wire_rules.py).
    model = "gemini-2.5-flash-native-audio-latest"
    async with client(emu).aio.live.connect(model=model, config=CONFIG) as session:
        await session.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text="Say hello")]),
            turn_complete=True,
        )
        messages = await collect_turn(session)
    audio = audio_of(messages)
    assert len(audio) / 48_000 == pytest.approx(3.869, abs=0.01)  # bot_greeting.wav
    parts = [
        m.server_content.model_turn.parts
        for m in messages
        if m.server_content and m.server_content.model_turn
    ]
    assert all(len(p) == 1 and p[0].inline_data.mime_type == "audio/pcm;rate=24000" for p in parts)
    kinds = [
        k
        for m in messages
        if m.server_content
        for k in ("generation_complete", "turn_complete")
        if getattr(m.server_content, k)
    ]
    assert kinds == ["generation_complete", "turn_complete"]
    last = messages[-1]
    assert last.server_content.turn_complete and last.usage_metadata.response_token_count == 123
    assert (
        "".join(  # transcripts come in fragments
            m.server_content.output_transcription.text
            for m in messages
            if m.server_content and m.server_content.output_transcription
        )
        == "[bot audio 3.87 s]"
    )
    setup = emu.recordings["s1"][0]["msg"]["setup"]
    assert setup["model"] == f"models/{model}"


@emu_with(config={"voice": "echo"})
async def test_audio_turn_is_echoed_at_24k(emu: LiveEmulator) -> None:
    speech = caller_hello_16k()
    async with client(emu).aio.live.connect(model="gemini-3.8-live", config=CONFIG) as session:
        await send_speech(
            session, np.concatenate([np.zeros(3200, np.int16), speech, np.zeros(16000, np.int16)])
        )
        messages = await collect_turn(session)
    heard = [
        m.server_content.input_transcription.text
        for m in messages
        if m.server_content and m.server_content.input_transcription
    ]
    assert len(heard) > 1 and "".join(heard).startswith("[caller audio 2.")  # fragments
    reply = np.frombuffer(audio_of(messages), np.int16).astype(np.float32)
    ref = soxr.resample(speech.astype(np.float32), 16000, 24000)
    # Fidelity: the echo contains the whole utterance, and correlates with it near-perfectly.
    lag = int(np.argmax(np.correlate(reply[:24000], ref[:4800], mode="valid")))
    seg = reply[lag : lag + ref.size]
    voiced_end = int(np.nonzero(np.abs(ref) > 1000)[0][-1])  # the file ends in silence
    assert seg.size >= voiced_end
    corr = float(
        np.dot(seg, ref[: seg.size]) / (np.linalg.norm(seg) * np.linalg.norm(ref[: seg.size]))
    )
    assert corr > 0.99
    # audio is recorded by length only
    recorded = [r["msg"] for r in emu.recordings["s1"] if "realtime_input" in r["msg"]]
    assert recorded[0]["realtime_input"]["audio"]["data"] == "<640 bytes>"


@emu_with(config={"voice": "wav", "pace": 2.0, "wait_playback": True})
async def test_barge_in_interrupts_the_reply(emu: LiveEmulator) -> None:
    speech = caller_hello_16k()
    async with client(emu).aio.live.connect(model="gemini-3.8-live", config=CONFIG) as session:
        await send_speech(session, np.concatenate([speech, np.zeros(16000, np.int16)]))
        seen: list[types.LiveServerMessage] = []
        async for message in session.receive():
            seen.append(message)
            if message.data and sum(len(m.data or b"") for m in seen) > 48_000:
                await send_speech(session, speech[:8000])  # caller talks over the bot
    flags = [
        k
        for m in seen
        if m.server_content
        for k in ("interrupted", "generation_complete", "turn_complete")
        if getattr(m.server_content, k)
    ]
    assert flags == ["interrupted", "turn_complete"]
    assert len(audio_of(seen)) < 13 * 48_000  # the 13.8 s answer was cut short


@pytest.mark.parametrize(
    ("model", "config", "version", "code", "reason"),
    [
        (
            "gemini-9-live",
            {},
            "v1beta",
            1008,
            "models/gemini-9-live is not found for API version v1beta, or is not supported for "
            "bidiGenerateContent. Call ListModels to s",
        ),  # the real reason, cut to 123 bytes
        (
            "gemini-2.0-flash-live-001",
            {},
            "v1alpha",
            1008,
            model_not_found_reason("gemini-2.0-flash-live-001", "v1alpha").encode()[:123].decode(),
        ),
        (
            "gemini-3.8-live",
            {"enable_affective_dialog": True},
            None,
            1007,
            'Invalid JSON payload received. Unknown name "enableAffectiveDialog" at '
            "'setup.generation_config': Cannot find field.",
        ),
        (
            "gemini-2.5-flash-native-audio-preview-12-2025",
            {"proactivity": {"proactive_audio": True}},
            "v1beta",
            1007,
            "Invalid JSON payload received. Unknown name \"proactivity\" at 'setup': "
            "Cannot find field.",
        ),
        (
            "gemini-3.8-live",
            {"response_modalities": ["TEXT"]},
            None,
            1007,
            "The requested combination of response modalities (TEXT) is not supported by "
            "the model.",
        ),
        (
            "gemini-3.8-live",
            {"response_modalities": ["TEXT", "AUDIO"]},
            None,
            1007,
            "The requested combination of response modalities (TEXT, AUDIO) is not supported "
            "by the model.",
        ),
        (
            "gemini-3.8-live",
            {"proactivity": {"proactive_audio": False}},
            None,
            1007,
            "Request contains an invalid argument.",
        ),
        (
            "gemini-3.8-live-extended-thinking",
            {},
            None,
            1007,
            "Thinking level must be specified for this model.",
        ),
        (
            "gemini-3.8-live-extended-thinking",
            {"thinking_config": {"thinking_level": "MINIMAL"}},
            None,
            1007,
            "Request contains an invalid argument.",
        ),
        (
            "gemini-3.1-flash-live-preview",
            {"thinking_config": {"thinking_budget": 100}},
            None,
            1007,
            "Request contains an invalid argument.",
        ),
        (
            "gemini-3.8-live",
            {"thinking_config": {"thinking_level": "LOW"}},
            None,
            1007,
            "Request contains an invalid argument.",
        ),
    ],
)
async def test_setup_rejections_raise_from_connect(
    emu: LiveEmulator, model: str, config: dict, version: str | None, code: int, reason: str
) -> None:
    with pytest.raises(errors.APIError) as info:
        async with client(emu, version).aio.live.connect(model=model, config=config):
            pass
    assert (info.value.code, info.value.details) == (code, reason)
    assert len(reason.encode()) <= 123


async def test_affective_dialog_accepted_on_v1alpha_for_25(emu: LiveEmulator) -> None:
    cfg = {"enable_affective_dialog": True, "proactivity": {"proactive_audio": True}}
    model = "gemini-2.5-flash-native-audio-preview-12-2025"
    async with client(emu, "v1alpha").aio.live.connect(model=model, config=cfg) as session:
        await session.send_realtime_input(text="hi")
        assert audio_of(await collect_turn(session))


@emu_with(faults=FaultPlan(goaway_after=0.2, time_left=0.3))
async def test_goaway_then_deadline_close(emu: LiveEmulator) -> None:
    async with client(emu).aio.live.connect(model="gemini-3.8-live", config=CONFIG) as session:
        got = []
        with pytest.raises(errors.APIError) as info:
            async for message in session.receive():
                got.append(message)
    assert got[-1].go_away.time_left == "0.3s" or got[-1].go_away.time_left.total_seconds() == 0.3
    assert (info.value.code, info.value.details) == (
        1011,
        "Deadline expired before operation could complete.",
    )


@emu_with(faults=FaultPlan(max_sessions=1, setup_delay=0.1))
async def test_quota_and_slow_setup(emu: LiveEmulator) -> None:
    start = time.monotonic()
    async with client(emu).aio.live.connect(model="gemini-3.8-live", config=CONFIG):
        assert time.monotonic() - start >= 0.1
        with pytest.raises(errors.APIError) as info:
            async with client(emu).aio.live.connect(model="gemini-3.8-live", config=CONFIG):
                pass
    assert info.value.code == 1011
    assert (
        info.value.details
        == "You exceeded your current quota, please check your plan and billing details."
    )


@emu_with(faults=FaultPlan(close_after=0.2, close_reason="The service is currently unavailable."))
async def test_close_at_a_given_time(emu: LiveEmulator) -> None:
    async with client(emu).aio.live.connect(model="gemini-3.8-live", config=CONFIG) as session:
        with pytest.raises(errors.APIError) as info:
            await collect_turn(session)
    assert (info.value.code, info.value.details) == (1011, "The service is currently unavailable.")


async def test_session_resumption_restores_and_rejects_stale(emu: LiveEmulator) -> None:
    cfg = CONFIG.model_copy(update={"session_resumption": types.SessionResumptionConfig()})
    async with client(emu).aio.live.connect(model="gemini-3.8-live", config=cfg) as session:
        await session.send_realtime_input(text="first question")
        messages = await collect_turn(session)
        async for message in session.receive():  # the idle update after turnComplete
            if message.session_resumption_update and message.session_resumption_update.resumable:
                handle = message.session_resumption_update.new_handle
                break
    first_prompt = messages[-1].usage_metadata.prompt_token_count
    resumed = cfg.model_copy(
        update={"session_resumption": types.SessionResumptionConfig(handle=handle)}
    )
    async with client(emu).aio.live.connect(model="gemini-3.8-live", config=resumed) as session:
        await session.send_realtime_input(text="second question")
        again = await collect_turn(session)
    # The restored context includes the first exchange, so the prompt grew.
    assert again[-1].usage_metadata.prompt_token_count > first_prompt + 100
    stale = cfg.model_copy(
        update={"session_resumption": types.SessionResumptionConfig(handle="nope")}
    )
    with pytest.raises(errors.APIError) as info:
        async with client(emu).aio.live.connect(model="gemini-3.8-live", config=stale):
            pass
    assert (info.value.code, info.value.details) == (1008, "BidiGenerateContent session not found")


@emu_with(config={"tool_scripts": (ToolScript(after_turn=1, name="end_call"),)})
async def test_scripted_tool_call_and_response(emu: LiveEmulator) -> None:
    tools = [
        types.Tool(
            function_declarations=[
                types.FunctionDeclaration(name="end_call", description="hang up")
            ]
        )
    ]
    cfg = CONFIG.model_copy(update={"tools": tools})
    async with client(emu).aio.live.connect(model="gemini-3.8-live", config=cfg) as session:
        await session.send_realtime_input(text="bye now")
        async for message in session.receive():
            if message.tool_call:
                call = message.tool_call.function_calls[0]
                break
        assert call.name == "end_call"
        await session.send_tool_response(
            function_responses=[
                types.FunctionResponse(id=call.id, name=call.name, response={"ok": True})
            ]
        )
        after = await collect_turn(session)
    texts = [
        m.server_content.output_transcription.text
        for m in after
        if m.server_content and m.server_content.output_transcription
    ]
    assert texts[0] in ("", None)
    assert len(audio_of(after)) == 1.5 * 48_000
    # 3.8 bundles generationComplete and turnComplete into the reply's last message.
    assert any(m.server_content and m.server_content.generation_complete for m in after)
    assert after[-1].server_content.turn_complete


@emu_with(
    config={"voice": "tone", "pace": 4.0, "tone_secs": 1.0},
    faults=FaultPlan(stall_after=0.3, stall_secs=0.4),
)
async def test_stall_in_the_middle_of_a_reply(emu: LiveEmulator) -> None:
    async with client(emu).aio.live.connect(model="gemini-3.8-live", config=CONFIG) as session:
        await session.send_realtime_input(text="go")
        arrivals = []
        async for message in session.receive():
            if message.data:
                arrivals.append(time.monotonic())
    assert max(np.diff(arrivals)) >= 0.35


async def test_record_file_and_raw_client_rules(tmp_path: Path) -> None:
    import ssl

    import websockets

    record = tmp_path / "rec.jsonl"
    async with LiveEmulator(EmulatorConfig(**FAST), record_path=record) as emu:
        path = "//ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContent"
        ctx: ssl.SSLContext = emu.client_ssl_context()
        url = emu.url.replace("https", "wss")
        async with websockets.connect(url + path, ssl=ctx) as ws:  # no key
            await ws.send(json.dumps({"setup": {"model": "models/gemini-3.8-live"}}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd.code == 1008 and "unregistered callers" in closed.value.rcvd.reason
        assert len(closed.value.rcvd.reason.encode()) == 123
        async with websockets.connect(f"{url}{path}?key=k", ssl=ctx) as ws:
            aad = {"automatic_activity_detection": {"disabld": True}}
            setup = {"model": "models/gemini-3.8-live", "realtimeInputConfig": aad}
            await ws.send(json.dumps({"setup": setup}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        full = (
            'Invalid JSON payload received. Unknown name "disabld" at '
            "'setup.realtime_input_config.automatic_activity_detection': Cannot find field."
        )
        assert closed.value.rcvd.reason == full.encode()[:123].decode()  # cut like the service
        async with websockets.connect(
            url + path, ssl=ctx, additional_headers={"x-goog-api-key": "k"}
        ) as ws:
            aad = {"automaticActivityDetection": {"disabled": True}}
            setup = {"model": "models/gemini-3.8-live", "realtimeInputConfig": aad}
            await ws.send(json.dumps({"setup": setup}))
            assert json.loads(await ws.recv()) == {"setupComplete": {}}
            pcm = caller_hello_16k()[:16000].tobytes()
            data = base64.urlsafe_b64encode(pcm).decode()
            await ws.send(json.dumps({"realtimeInput": {"activityStart": {}}}))
            await ws.send(
                json.dumps(
                    {
                        "realtimeInput": {
                            "mediaChunks": [{"data": data, "mimeType": "audio/pcm;rate=16000"}]
                        }
                    }
                )
            )
            await ws.send(json.dumps({"realtimeInput": {"activityEnd": {}}}))
            replies = []
            while not replies or "turnComplete" not in replies[-1].get("serverContent", {}):
                replies.append(json.loads(await ws.recv()))
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert {r["session"] for r in lines} == {"s1", "s2", "s3"}
    chunk = lines[-2]["msg"]["realtimeInput"]["mediaChunks"][0]
    assert chunk["data"] == f"<{len(pcm)} bytes>"
    assert any("modelTurn" in r.get("serverContent", {}) for r in replies)
    await asyncio.sleep(0)
