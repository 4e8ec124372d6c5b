"""Emulator settings: replies, scripted tool calls and injected faults.

`EmulatorConfig`, `ToolScript`, `FaultPlan`, and the parsers for their CLI forms.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from pipelines.gemini_models import AUDIO_SESSION_LIMIT_SECS
from sim.emulator.misbehaviour import MISBEHAVIOURS, parse_trigger

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
# Short clips for tests whose point is not a reply's length (the defaults below are 3.9 s and
# 13.8 s): the greeting's first phrase (2.06 s, 1.84 s audible) and the long answer's first
# phrases, cut at a pause (5.75 s, 5.70 s audible).
SHORT_REPLY_WAV = ASSETS_DIR / "bot_short_reply.wav"
MEDIUM_ANSWER_WAV = ASSETS_DIR / "bot_medium_answer.wav"

Voice = Literal["echo", "wav", "tone"]
VOICES: tuple[str, ...] = ("echo", "wav", "tone")


@dataclass(frozen=True)
class ToolScript:
    """Call a function after a given caller turn, as the real model does.

    **Announcing.** The model speaks before a tool call when the persona's instructions make it
    announce the call. The deterministic rule: a sentence of the setup's system instruction
    names the function and contains the word "before" (e.g. "Before calling transfer_call,
    tell the caller you are transferring them."). Then a short reply (``announce_secs`` of the
    greeting voice, with ``generationComplete``) comes first and the ``toolCall`` right after
    it, with no ``turnComplete`` in between; otherwise the ``toolCall`` comes alone.
    ``announce`` forces either way.

    **Blocking or not.** A function declared ``NON_BLOCKING`` does not hold the conversation:
    after its ``toolCall`` the turn's ordinary answer plays, and the function response's
    ``scheduling`` is honoured: ``SILENT`` gives no spoken reply, ``WHEN_IDLE`` (the default)
    a reply once the current one has finished, ``INTERRUPT`` interrupts the current reply
    (``interrupted``, ``turnComplete``) and answers at once. A ``BLOCKING`` call's response is
    answered at once (``scheduling`` is ignored, as the service does).

    **Cancelling.** Caller speech while a call is pending (no response yet) gives
    ``toolCallCancellation`` with the pending ids; a late response to a cancelled id is
    ignored.

    Attributes:
        after_turn: 1-based caller turn (speech or realtime text; the clientContent-triggered
            greeting does not count) whose reply is replaced by this tool call.
        name: Function name; it is called only if the setup declared it, as a model would.
        args: Arguments sent in ``toolCall.functionCalls[0].args``.
        announce: ``True``/``False`` forces the spoken announcement; ``None`` follows the
            system instruction (see above).
    """

    after_turn: int
    name: str
    args: dict[str, object] = field(default_factory=dict)
    announce: bool | None = None


@dataclass
class EmulatorConfig:
    """How the emulated model behaves.

    Attributes:
        think_ms: Delay between the end of a caller turn and the first reply message.
        voice: ``echo`` replays the caller's utterance at 24 kHz, ``wav`` plays
            ``answer_wav`` (``greeting_wav`` for clientContent-triggered turns), ``tone`` a
            440 Hz tone of ``tone_secs``.
        greeting_wav: PCM16 mono WAV (any rate) for greetings (clientContent turns).
        answer_wav: PCM16 mono WAV for replies to caller turns with the ``wav`` voice.
        goodbye_secs: Length of the reply after a tool response (the greeting's first seconds).
        tone_secs: Length of the ``tone`` voice's reply.
        chunk_ms: Audio per ``modelTurn`` message.
        pace: Audio seconds sent per wall-clock second (the service sends faster than real
            time); 0 sends as fast as the socket takes it.
        burst_ms: Audio sent back to back before pausing to honour ``pace``.
        wait_playback: Hold ``turnComplete`` until the reply would have finished playing, as
            the service does (``generationComplete`` comes first).
        api_key: If set, only this key is accepted; otherwise any non-empty key.
        tool_scripts: Scripted tool calls.
        record_in_memory: Keep every client message per session in ``LiveEmulator.recordings``.
        announce_secs: Length of a spoken announcement before a tool call (see `ToolScript`).
        connection_secs: Connection lifetime, as the service's (~10 min): ``goAway`` comes
            ``goaway_lead_secs`` before it, then the close 1011 ``Deadline expired ...``.
            ``None``: no limit. ``FaultPlan.lifetime`` overrides it (unscaled).
        goaway_lead_secs: How long before a limit ``goAway`` is sent (the service: ~60 s; its
            ``timeLeft`` says this, scaled).
        audio_session_secs: Session limit for audio sessions whose setup has no
            ``contextWindowCompression`` (the service: 15 min; no limit with compression). It
            counts from the session's first connection, across resumptions; ``goAway`` comes
            ``goaway_lead_secs`` before it. ``None``: no limit.
        session_limit_code: Close code at the session limit. The service's code is not
            confirmed anywhere public; 1011 with ``session_limit_reason`` (the connection
            cap's close) is a plausible default.
        session_limit_reason: Close reason at the session limit.
        setup_ms: How long the service takes from ``setup`` to ``setupComplete`` on every
            connection (new, resumed or after a drop): the real Live API's setup plus the
            network round trips a loopback connection lacks, several hundred milliseconds in
            production (0.3-0.7 s reported for realtime model sessions, gptme-contrib#792).
            The ``setup_delay`` fault replaces it.
        time_scale: Multiplies every limit above, its ``goAway`` lead and ``think_ms`` (0.01
            makes a 10-minute connection last 6 s), so tests run long behaviours in seconds.
            Audio (replies, their pace and playback) stays real time.
    """

    think_ms: int = 300
    setup_ms: int = 400
    voice: Voice = "wav"
    greeting_wav: Path = ASSETS_DIR / "bot_greeting.wav"
    answer_wav: Path = ASSETS_DIR / "bot_long_answer.wav"
    goodbye_secs: float = 1.5
    tone_secs: float = 1.5
    chunk_ms: int = 80
    pace: float = 2.0
    burst_ms: int = 400
    wait_playback: bool = True
    api_key: str | None = None
    tool_scripts: tuple[ToolScript, ...] = ()
    record_in_memory: bool = True
    announce_secs: float = 1.0
    connection_secs: float | None = 600.0
    goaway_lead_secs: float = 60.0
    audio_session_secs: float | None = float(AUDIO_SESSION_LIMIT_SECS)
    session_limit_code: int = 1011
    session_limit_reason: str = "Deadline expired before operation could complete."
    time_scale: float = 1.0


@dataclass
class FaultPlan:
    """Failures to inject, per session unless noted. Times count from ``setupComplete``.

    Attributes:
        goaway_after: Send ``goAway`` after this many seconds ...
        time_left: ... announcing this much time left, then close with 1011
            ``Deadline expired before operation could complete.``
        close_after: Close with ``close_code``/``close_reason`` after this many seconds.
        close_code: Close code for ``close_after``.
        close_reason: Close reason for ``close_after``.
        close_sessions: 1-based numbers of the emulator's sessions (connections, in the order
            they opened), joined by ``+``, that ``close_after`` applies to; empty: all.
            ``"2+4"`` drops the second and fourth connections only (a long call's two drops).
        lifetime: Connection lifetime limit: ``goAway`` ``min(60, lifetime/10)`` seconds
            before, then 1011 ``Deadline expired ...`` at the limit (the service: ~10 min).
        max_sessions: Concurrent-session quota for the whole emulator; the session over it
            is closed at setup with 1011 ``You exceeded your current quota ...``.
        setup_delay: Seconds to wait before ``setupComplete``.
        stall_after: Stall each reply after this many seconds of audio were sent ...
        stall_secs: ... for this long.
        refuse_connects: After the emulator's first close of a session (a drop), the next this
            many connection attempts are refused at setup with 1011 ``The service is currently
            unavailable.`` (a reconnect refused, as the service does when overloaded).
        handle_ttl: Seconds a resumption handle stays valid (the service: 2 h).
        forget_handles: Treat every resumption handle as stale (1008 on resume).
        missed_bargein: Caller speech during a reply does not interrupt it. A probability
            (``"0.3"``) or a caller turn (``"turn:2"``); see `sim.emulator.misbehaviour`.
        phantom_interrupt: ``interrupted`` + ``turnComplete`` mid-reply with no caller speech.
        freeze_after_interrupt: After ``interrupted`` the connection answers nothing more.
        empty_turn: A caller turn is answered with a bare ``turnComplete``.
        seed: Seed of the misbehaviour draws (per session: seed and session id).
    """

    goaway_after: float | None = None
    time_left: float = 2.0
    close_after: float | None = None
    close_code: int = 1011
    close_reason: str = "Internal error encountered."
    close_sessions: str = ""
    lifetime: float | None = None
    max_sessions: int | None = None
    setup_delay: float = 0.0
    stall_after: float | None = None
    stall_secs: float = 3.0
    refuse_connects: int = 0
    handle_ttl: float = 7200.0
    forget_handles: bool = False
    missed_bargein: str = ""
    phantom_interrupt: str = ""
    freeze_after_interrupt: str = ""
    empty_turn: str = ""
    seed: int = 0


FAULT_HELP = """\
--fault KEY=VALUE[,KEY=VALUE...] (repeatable; keys merge):
  goaway_after=SECS,time_left=SECS   goAway then 1011 'Deadline expired ...' (time_left default 2)
  close_after=SECS[,close_code=N][,close_reason=TEXT]  close at a time (default 1011 Internal error)
  close_sessions=N+N...              close_after only on these sessions (1-based, opening order)
  lifetime=SECS                      connection lifetime limit (goAway shortly before, then 1011)
  max_sessions=N                     concurrent-session quota (1011 'You exceeded your quota ...')
  setup_delay=SECS                   delay before setupComplete
  stall_after=SECS,stall_secs=SECS   pause each reply after SECS of audio
  refuse_connects=N                  after the first drop, the next N connections refused (1011)
  handle_ttl=SECS | forget_handles=true   resumption handles expire / are always stale (1008)
Misbehaviour like the real model's; each takes a probability P (0..1) or turn:N (the reply to
caller turn N); draws are seeded (seed=N, or --seed):
  missed_bargein=P|turn:N            caller speech during a reply does not interrupt it
  phantom_interrupt=P|turn:N         'interrupted' + turnComplete mid-reply, nobody spoke
  freeze_after_interrupt=P|turn:N    after 'interrupted' the connection never answers again
  empty_turn=P|turn:N                a caller turn answered with a bare turnComplete
Limits are on by default (see --connection-secs, --session-secs, --time-scale).
Example: --fault goaway_after=5,time_left=2 --fault max_sessions=100 --fault missed_bargein=0.3"""


def parse_faults(specs: list[str]) -> FaultPlan:
    """Parse ``--fault`` values (see `FAULT_HELP`) into one `FaultPlan`.

    Raises:
        ValueError: A key is unknown or a value does not parse, with the fix.
    """
    plan = FaultPlan()
    types = {f.name: f.type for f in fields(FaultPlan)}
    for spec in specs:
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, raw = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in types:
                raise ValueError(
                    f"--fault {spec!r}: got {item!r}, expected KEY=VALUE with KEY one of "
                    f"{', '.join(types)}"
                )
            kind = str(types[key])
            if key in MISBEHAVIOURS:
                parse_trigger(key, raw)  # refuse a bad value now, with its own fix
                setattr(plan, key, raw.strip())
                continue
            try:
                value: object
                if "bool" in kind:
                    value = raw.strip().lower() in ("1", "true", "yes", "on")
                elif "int" in kind and "float" not in kind:
                    value = int(raw)
                elif "float" in kind:
                    value = float(raw)
                else:
                    value = raw
            except ValueError as exc:
                raise ValueError(f"--fault {key}={raw!r}: expected a number ({kind})") from exc
            setattr(plan, key, value)
    return plan


def parse_tool_script(spec: str) -> ToolScript:
    """Parse ``N:NAME[:JSON_ARGS]`` (e.g. ``2:end_call`` or ``1:lookup:{"id":"42"}``).

    Raises:
        ValueError: The spec does not have that shape.
    """
    turn, _, rest = spec.partition(":")
    name, _, raw_args = rest.partition(":")
    try:
        args = json.loads(raw_args) if raw_args else {}
        after = int(turn)
    except ValueError as exc:
        raise ValueError(
            f"--tool-call {spec!r}: expected N:NAME[:JSON_ARGS], e.g. 2:end_call"
        ) from exc
    if not name or after < 1 or not isinstance(args, dict):
        raise ValueError(f"--tool-call {spec!r}: expected N>=1, a name and a JSON object")
    return ToolScript(after_turn=after, name=name, args=args)
