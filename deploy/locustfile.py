"""Locust (2.x) load test driving the same sans-IO caller core as ``voicebot loadtest``.

Run on one machine, one worker process per core (the GIL):
    locust -f deploy/locustfile.py --host http://bot:8080 --headless -u 200 -r 10 --processes -1

Run beyond one machine (Locust's distributed mode; deploy/README.md, "Load beyond one machine"):
a master that only coordinates and sums, and workers on as many machines as the load needs,
each with this file and the repository (``sim/``) beside it:
    locust -f deploy/locustfile.py --master --headless --expect-workers 4 -u 800 -r 20 -t 10m \
        --host https://bot.example.com --csv out/run          # on the master, port 5557
    locust -f deploy/locustfile.py --worker --master-host MASTER_IP --processes -1  # each machine

Each user places calls in a loop: POST /twilio/voice (form params like Twilio, signed when
TWILIO_AUTH_TOKEN is set), waits as Twilio's media server does before it connects (the
scenario's ``stream_connect_ms``: 300 ms by default, ``sim.caller.plan``'s realistic
``DEFAULT_STREAM_CONNECT_SECS``, as ``voicebot loadtest``; ``--stream-connect-ms MS`` or
LOCUST_STREAM_CONNECT_MS, 0: at once), opens the TwiML <Stream> with websocket-client
(gevent-patched socket), runs ``sim.caller.core.CallerCore``: a sender greenlet ticks every 20 ms
on absolute deadlines, a receiver greenlet feeds messages in. One ``events.request`` per turn
(not per frame): "response_latency", "greeting", "bargein_to_clear", "send_lateness_max", "call"
(with failure); "greeting" runs from the stream's start, as ``voicebot loadtest``'s.
Locust bins response times (10 ms above 100 ms), so read exact percentiles from ``voicebot
loadtest`` or from the CSV of per-call records this file writes when LOCUST_CALLS_CSV is set.
Every call is on the scenario's line (``line_noise``; by default the realistic noisy line of
``sim.caller.line_noise.DEFAULT_LINE_NOISE_DBFS``); override it with ``--line-noise-dbfs DBFS|off``,
``--line-noise-color``, ``--echo-db`` and ``--playout-delay-ms`` (or LOCUST_LINE_NOISE_DBFS, …).
The line is printed at the start and written in every CSV row, the stream connect delay printed.
Messages the server sends that Twilio would drop are counted as "protocol_error" failures, one
per call with any.
Needs: locust, websocket-client (not project dependencies; not run in CI). The repository root is
put on ``sys.path`` so ``sim`` imports without installing the project. Only sans-IO modules are
imported (no aiohttp/asyncio under gevent).
"""

import os
import random
import sys
import time
from pathlib import Path

import gevent
import websocket
from locust import HttpUser, constant, events, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.caller.core import CallerCore  # noqa: E402
from sim.caller.line_noise import NOISE_COLORS, describe_line, parse_dbfs  # noqa: E402
from sim.caller.plan import FRAME_SECS  # noqa: E402
from sim.caller.twilio_webhook import (  # noqa: E402
    REDIRECT_FETCH_SECS,
    RedirectChain,
    new_sid,
    parse_twiml,
    twilio_signature,
    voice_url,
    webhook_params,
)
from sim.loadtest.scenario import load_scenario  # noqa: E402

SCENARIO = load_scenario(os.environ.get("VOICEBOT_SCENARIO", "default"))
AUTH_TOKEN = os.environ.get("TWILIO_AUTH_TOKEN") or None
PERSONA = os.environ.get("VOICEBOT_PERSONA") or None


def _level_or_off(text):
    level = parse_dbfs(text)
    return "off" if level is None else level


@events.init_command_line_parser.add_listener
def _line_options(parser):
    parser.add_argument(
        "--line-noise-dbfs", type=_level_or_off, env_var="LOCUST_LINE_NOISE_DBFS",
        help="caller line noise level in dBFS, or off (default: the scenario's line)",
    )  # fmt: skip
    parser.add_argument(
        "--line-noise-color", choices=NOISE_COLORS, env_var="LOCUST_LINE_NOISE_COLOR",
        help="caller line noise colour",
    )  # fmt: skip
    parser.add_argument(
        "--echo-db", type=_level_or_off, env_var="LOCUST_ECHO_DB",
        help="the bot's echo, dB below the bot as heard, or off",
    )  # fmt: skip
    parser.add_argument(
        "--playout-delay-ms", type=float, env_var="LOCUST_PLAYOUT_DELAY_MS",
        help="Twilio's buffering before received audio is heard",
    )  # fmt: skip
    parser.add_argument(
        "--stream-connect-ms", type=float, env_var="LOCUST_STREAM_CONNECT_MS",
        help="Twilio's delay from reading the TwiML to opening the stream; 0: at once "
        "(default: the scenario's stream_connect_ms, 300)",
    )  # fmt: skip


@events.init.add_listener
def _apply_line(environment, **_kwargs):
    global SCENARIO
    o = environment.parsed_options
    if o is not None:
        SCENARIO = SCENARIO.with_line(
            o.line_noise_dbfs,
            o.line_noise_color,
            o.echo_db,
            o.playout_delay_ms,
            o.stream_connect_ms,
        )
    SCENARIO.prepare()  # noise bank and speech mixes once per process, before any call
    print(f"voicebot callers' line: {describe_line(SCENARIO.line_description())}", flush=True)
    print(f"voicebot stream connect: {SCENARIO.stream_connect_ms:g} ms after the TwiML", flush=True)


class TwilioCaller(HttpUser):
    """One simulated phone line placing calls back to back."""

    wait_time = constant(1)

    def _fire(self, name, ms, exc=None):
        self.environment.events.request.fire(
            request_type="voice",
            name=name,
            response_time=ms,
            response_length=0,
            exception=exc,
            context={},
        )

    @task
    def call(self):
        call_sid, account_sid = new_sid("CA"), "AC" + "0" * 32
        chain = RedirectChain(voice_url(self.host, PERSONA))
        params = webhook_params(call_sid, account_sid, "+15005550001", "+15005550006")
        t0 = time.monotonic()
        while True:
            # A full process may pass the call on: like Twilio, POST the same form, signed anew.
            url = chain.url
            headers = (
                {"X-Twilio-Signature": twilio_signature(AUTH_TOKEN, url, params)}
                if AUTH_TOKEN
                else {}
            )
            with self.client.post(
                url, data=params, headers=headers, name="webhook", catch_response=True
            ) as r:
                if r.status_code != 200:
                    r.failure(f"webhook: HTTP {r.status_code}")
                    return
                try:
                    tw = parse_twiml(r.text)
                    if not chain.follow(tw.redirect, tw.redirect_method):
                        break
                except ValueError as e:
                    r.failure(f"twiml: {e}")
                    return
            gevent.sleep(REDIRECT_FETCH_SECS)
        if not tw.stream_url:
            self._fire("call", 0, Exception("rejected: TwiML <Say> without <Stream>"))
            return
        plan = SCENARIO.build_plan(random.Random())
        if plan.stream_connect_secs > 0:  # Twilio's media server connecting to the stream URL
            gevent.sleep(plan.stream_connect_secs)
        ws_headers = []
        if AUTH_TOKEN:
            ws_headers.append(
                "X-Twilio-Signature: " + twilio_signature(AUTH_TOKEN, tw.stream_url, {})
            )
        try:
            ws = websocket.create_connection(
                tw.stream_url, header=ws_headers, enable_multithread=True, timeout=10
            )
        except websocket.WebSocketBadStatusException as e:
            self._fire("call", 0, Exception(f"stream: upgrade HTTP {e.status_code}"))
            return
        except Exception as e:
            self._fire("call", 0, Exception(f"stream: {e!r}"))
            return
        core = CallerCore.for_twiml(plan, tw, t0=t0, call_sid=call_sid, account_sid=account_sid)
        for m in core.open(time.monotonic()):
            ws.send(m)
        ws.settimeout(None)

        def receive():
            while not core.done:
                try:
                    opcode, data = ws.recv_data(control_frame=True)
                except Exception:
                    core.on_closed(time.monotonic(), None, "connection lost")
                    return
                now = time.monotonic()
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    text = data if isinstance(data, str) else data.decode()
                    for out in core.on_message(text, now):
                        ws.send(out)
                elif opcode == websocket.ABNF.OPCODE_BINARY:
                    core.on_binary(len(data), now)  # Twilio drops it: error 31950
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                    core.on_closed(now, code, data[2:].decode(errors="replace"))
                    return

        receiver = gevent.spawn(receive)
        deadline = time.monotonic()
        try:
            while not core.done:
                deadline += FRAME_SECS
                gevent.sleep(max(0.0, deadline - time.monotonic()))
                now = time.monotonic()
                late_ms = (now - deadline) * 1000
                core.res.send_lateness_max_ms = max(core.res.send_lateness_max_ms, late_ms)
                for m in core.on_tick(now):
                    ws.send(m)
        except Exception as e:
            core.fail(time.monotonic(), f"stream: send failed: {e!r}")
        finally:
            ws.close()
            receiver.join(timeout=5)
            receiver.kill()
        res = core.result(time.monotonic())
        if res.greeting_ms is not None:
            self._fire("greeting", res.greeting_ms)
        for ms in res.response_latencies_ms:
            self._fire("response_latency", ms)
        for ms in res.bargein_to_clear_ms:
            self._fire("bargein_to_clear", ms)
        self._fire("send_lateness_max", res.send_lateness_max_ms)
        if res.protocol_errors:
            kinds = ", ".join(f"{k} x{n}" for k, n in sorted(res.protocol_errors.items()))
            self._fire("protocol_error", 0, Exception(f"Twilio would drop: {kinds}"))
        self._fire("call", res.duration_secs * 1000, None if res.ok else Exception(res.failure))
        path = os.environ.get("LOCUST_CALLS_CSV")
        if path:
            with open(path, "a") as f:
                lat = ";".join(f"{v:.1f}" for v in res.response_latencies_ms)
                errors = ";".join(f"{k}={n}" for k, n in sorted(res.protocol_errors.items()))
                f.write(
                    f"{res.call_sid},{res.ok},{res.failure or ''},{res.greeting_ms},{lat},"
                    f'{res.stale_frames},{errors},"{describe_line(res.line)}"\n'
                )
