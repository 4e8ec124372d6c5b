"""A simulated call against an in-test Twilio-like server over loopback."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import pytest
from aiohttp import web

from sim.caller import CallPlan, parse_twiml, place_call, voice_url
from sim.caller.cmd import format_timeline
from sim.caller.line_noise import LineNoise
from sim.caller.twilio_webhook import MAX_REDIRECTS, RedirectChain
from sim.emulator import EmulatorConfig
from sim.emulator.config import SHORT_REPLY_WAV
from sim.testing import SEEN, TEST_THINK_MS, TONE, scripted_bot_app

pytestmark = pytest.mark.e2e

TOKEN = "test-auth-token"


async def test_call_completes_records_audio_and_sends_twilio_messages(
    aiohttp_server, tmp_path: Path
) -> None:
    app = scripted_bot_app(auth_token=TOKEN)
    server = await aiohttp_server(app)
    out = tmp_path / "heard.wav"
    plan = CallPlan().wait_for_greeting(timeout_secs=3, quiet_secs=0.2).dtmf("5").hangup()
    res = await place_call(
        str(server.make_url("/")), plan, auth_token=TOKEN, record=out, persona="sales"
    )
    assert res.ok, res.failure
    assert res.end_reason == "caller hung up"
    assert res.custom_parameters == {"persona": "sales"}
    assert res.greeting_ms is not None and res.greeting_ms < 500
    assert res.audio_received_secs == pytest.approx(0.4, abs=0.01)
    seen = app[SEEN]
    assert seen["form"]["CallStatus"] == "ringing" and seen["form"]["Direction"] == "inbound"
    assert seen["start"]["customParameters"] == {"persona": "sales"}
    assert (
        seen["events"][:2] == ["connected", "start"]
        and "dtmf" in seen["events"]
        and seen["events"][-1] == "stop"
    )
    assert seen["mark_back"] == "end"
    with wave.open(str(out)) as w:
        assert w.getframerate() == 8000 and w.getnframes() >= 3200


async def test_call_on_a_noisy_line_completes_against_the_real_server(
    make_emulator, make_server
) -> None:
    # The real server, SDK and Pipecat against the emulator; a 2 s greeting and reply (4 s
    # played in all).
    short = SHORT_REPLY_WAV
    emu = await make_emulator(
        EmulatorConfig(think_ms=TEST_THINK_MS, greeting_wav=short, answer_wav=short)
    )
    server = await make_server(emulator=emu)
    line = LineNoise(dbfs=-45.0, color="pink", echo_db=30.0)
    plan = (
        CallPlan(line_noise=line)
        .wait_for_greeting()
        .say("caller_question.wav")
        .wait_for_reply()
        .hangup()
    )
    res = await place_call(server.url, plan)
    assert res.ok, res.failure
    assert res.line == {
        "dbfs": -45.0,
        "color": "pink",
        "echo_db": 30.0,
        "echo_delay_ms": 40.0,
        "playout_delay_ms": 60.0,
    }
    assert res.greeting_ms is not None and res.greeting_ms < 3000
    assert len(res.response_latencies_ms) == 1 and res.replies_missed == 0
    assert res.talkovers == 0 and res.stale_frames == 0
    assert res.protocol_errors == {}  # the server sent nothing Twilio would drop
    assert res.audio_played_secs > 3.0
    text = format_timeline(res.to_dict())
    assert "line: pink noise -45 dBFS, echo -30 dB after 40 ms, playout delay 60 ms" in text
    assert "protocol errors (Twilio drops)  none" in text


async def test_messages_twilio_would_drop_are_counted_not_obeyed(aiohttp_server) -> None:
    async def voice(request: web.Request) -> web.Response:
        return web.Response(
            content_type="text/xml",
            text=f'<Response><Connect><Stream url="ws://{request.host}/m"/></Connect></Response>',
        )

    async def media(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()  # connected
        sid = json.loads((await ws.receive()).data)["streamSid"]
        await ws.send_str(
            json.dumps({"event": "media", "streamSid": "MZwrong", "media": {"payload": TONE}})
        )
        await ws.send_bytes(b"\x00" * 10)
        await ws.send_str(json.dumps({"event": "clear", "streamSid": sid, "sequenceNumber": "1"}))
        await ws.send_str(
            json.dumps({"event": "media", "streamSid": sid, "media": {"payload": TONE}})
        )
        async for msg in ws:
            if json.loads(msg.data)["event"] == "stop":
                break
        return ws

    app = web.Application()
    app.router.add_post("/twilio/voice", voice)
    app.router.add_get("/m", media)
    server = await aiohttp_server(app)
    plan = CallPlan().wait_for_greeting(timeout_secs=2, quiet_secs=0.1).hangup()
    res = await place_call(str(server.make_url("/")), plan)
    assert res.ok, res.failure  # Twilio drops bad messages; the call goes on
    assert res.protocol_errors == {"wrong_stream_sid": 1, "binary": 1, "extra_fields": 1}
    assert res.clears == 0  # the malformed clear was not obeyed
    assert res.audio_received_secs == pytest.approx(0.04)  # only the valid media counted


async def test_forged_signature_fails_with_webhook_403(aiohttp_server) -> None:
    server = await aiohttp_server(scripted_bot_app(auth_token=TOKEN))
    res = await place_call(str(server.make_url("/")), CallPlan().hangup(), auth_token="wrong-token")
    assert not res.ok and res.failure == "webhook: HTTP 403"


async def test_server_close_reports_code_and_apology(aiohttp_server) -> None:
    async def voice(request: web.Request) -> web.Response:
        return web.Response(
            content_type="text/xml",
            text=f'<Response><Connect><Stream url="ws://{request.host}/m"/></Connect><Say>Sorry.</Say></Response>',
        )

    async def media(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        await ws.close(code=1011, message=b"model unavailable")
        return ws

    app = web.Application()
    app.router.add_post("/twilio/voice", voice)
    app.router.add_get("/m", media)
    server = await aiohttp_server(app)
    res = await place_call(str(server.make_url("/")), CallPlan().pause(5))
    assert not res.ok and res.failure == "stream: closed 1011 model unavailable"
    assert "Sorry." in res.end_reason


def test_twiml_parsing_and_urls() -> None:
    tw = parse_twiml(
        '<Response><Connect><Stream url="wss://x/s"><Parameter name="a" value="1"/></Stream>'
        "</Connect><Say>bye</Say></Response>"
    )
    assert (tw.stream_url, tw.parameters, tw.say_after) == ("wss://x/s", {"a": "1"}, "bye")
    assert parse_twiml("<Response><Say>busy</Say><Hangup/></Response>").say_only == "busy"
    assert voice_url("http://h:1/", "p 1") == "http://h:1/twilio/voice?persona=p+1"


def test_redirect_chain_follows_like_twilio_and_says_why_it_stops() -> None:
    chain = RedirectChain("http://a:1/twilio/voice?persona=p")
    assert not chain.follow(None) and chain.url == "http://a:1/twilio/voice?persona=p"
    assert chain.follow("/twilio/voice?redirected=1")  # relative: against the current URL
    assert chain.url == "http://a:1/twilio/voice?redirected=1"
    assert chain.follow("http://b:2/twilio/voice", "post")
    assert (chain.url, chain.redirects) == ("http://b:2/twilio/voice", 2)
    with pytest.raises(ValueError, match="only POST is simulated"):
        chain.follow("/x", "GET")
    for _ in range(MAX_REDIRECTS - 2):
        assert chain.follow("/again")
    with pytest.raises(ValueError, match=f"more than {MAX_REDIRECTS} <Redirect>s"):
        chain.follow("/again")
    assert chain.redirects == MAX_REDIRECTS
