"""The HTTP half of a simulated Twilio call, sans-IO: webhook form, signatures, TwiML parsing.

Shared by the asyncio caller (:mod:`sim.caller`) and the gevent one (``deploy/locustfile.py``);
imports nothing that does I/O.
"""

from __future__ import annotations

import secrets
import wave
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

DEFAULT_TO = "+15005550006"
DEFAULT_FROM = "+15005550001"
REDIRECT_FETCH_SECS = 0.15
"""Twilio's delay before it requests a ``<Redirect>``'s URL: its webhook fetcher opens a new
HTTPS connection to the app over the internet (TCP and TLS handshakes, then the request: about
three round trips of ~50 ms), so the retry is a new connection the load balancer places anew."""
MAX_REDIRECTS = 50
"""How many TwiML documents a call may chain with ``<Redirect>`` before Twilio gives up: the
limit Twilio documents for a reply session (error 14106, a self-referencing ``<Redirect>``);
no separate Voice figure is published."""


def new_sid(prefix: str) -> str:
    """A random Twilio-style SID: ``prefix`` + 32 hex digits."""
    return prefix + secrets.token_hex(16)


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """``X-Twilio-Signature`` for ``url`` + ``params``, via twilio's own ``RequestValidator``."""
    from twilio.request_validator import RequestValidator

    return str(RequestValidator(auth_token).compute_signature(url, params))


def voice_url(url: str, persona: str | None = None) -> str:
    """The webhook URL: ``url`` itself when it names a path, else ``url + /twilio/voice``."""
    base = url if url.rstrip("/").endswith("/twilio/voice") else url.rstrip("/") + "/twilio/voice"
    if persona:
        base += ("&" if "?" in base else "?") + urlencode({"persona": persona})
    return base


def webhook_params(call_sid: str, account_sid: str, from_: str, to: str) -> dict[str, str]:
    """The form parameters Twilio sends with an inbound call's Voice URL request."""
    return {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Called": to,
        "CalledCountry": "US",
        "Caller": from_,
        "CallerCountry": "US",
        "Direction": "inbound",
        "From": from_,
        "FromCountry": "US",
        "To": to,
        "ToCountry": "US",
    }


@dataclass
class Twiml:
    """What the caller needs from the TwiML response."""

    stream_url: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    say_after: str | None = None
    say_only: str | None = None
    # The recorded <Say>'s voice and language attributes (what Twilio would speak it with).
    say_voice: str | None = None
    say_language: str | None = None
    # A <Redirect>'s URL (as written: absolute or relative) and method; verbs after it are ignored.
    redirect: str | None = None
    redirect_method: str = "POST"


class RedirectChain:
    """Twilio's walk along a call's ``<Redirect>``s, sans-IO: where to POST next, or why it stops.

    It starts at the Voice URL (``url``). After each TwiML document, :meth:`follow` says whether
    the document hands the call on; if so, ``url`` is the next one. Like Twilio, the caller POSTs
    the same call parameters there, signed anew for that URL, ``REDIRECT_FETCH_SECS`` later.
    Shared by the asyncio caller, the fake Twilio REST API's phone and the locustfile.
    """

    def __init__(self, url: str) -> None:
        """Start at the Voice URL ``url``."""
        self.url = url
        self.redirects = 0

    def follow(self, redirect: str | None, method: str = "POST") -> bool:
        """Follow a document's ``<Redirect>`` (``None``: it has none, the call stays there).

        Raises:
            ValueError: Twilio gives up (more than ``MAX_REDIRECTS``), or the method is not
                POST (the only one simulated).
        """
        if redirect is None:
            return False
        if self.redirects >= MAX_REDIRECTS:
            raise ValueError(f"more than {MAX_REDIRECTS} <Redirect>s (Twilio gives up)")
        if method.upper() != "POST":
            raise ValueError(f"<Redirect method={method}> (only POST is simulated)")
        self.url = urljoin(self.url, redirect)
        self.redirects += 1
        return True


def start_message(
    call_sid: str,
    stream_sid: str,
    parameters: dict[str, str],
    account_sid: str = "AC" + "1" * 32,
) -> dict[str, Any]:
    """Twilio's ``start`` message for a stream of ``call_sid`` (the TwiML's ``<Parameter>``s)."""
    return {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": stream_sid,
        "start": {
            "streamSid": stream_sid,
            "accountSid": account_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
    }


def parse_twiml(text: str) -> Twiml:
    """Parse ``<Response><Connect><Stream url>…</Connect><Say>…</Say></Response>``.

    A ``<Redirect>`` ends the document (its URL in ``redirect``).

    Raises:
        ValueError: not XML or not a ``<Response>`` document.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise ValueError(f"TwiML is not XML ({e}); got {text[:80]!r}") from e
    if root.tag != "Response":
        raise ValueError(f"TwiML root element is <{root.tag}>, expected <Response>")
    tw = Twiml()
    seen_connect = False
    for el in root:
        if el.tag == "Redirect":
            tw.redirect = (el.text or "").strip()
            tw.redirect_method = (el.get("method") or "POST").upper()
            break  # Twilio transfers control; nothing after <Redirect> runs
        if el.tag == "Connect":
            stream = el.find("Stream")
            if stream is not None and tw.stream_url is None:
                tw.stream_url = stream.get("url")
                for p in stream.findall("Parameter"):
                    tw.parameters[p.get("name", "")] = p.get("value", "")
                seen_connect = True
        elif el.tag == "Say":
            said = (el.text or "").strip()
            if seen_connect and tw.say_after is None:
                tw.say_after = said
            elif not seen_connect and tw.say_only is None:
                tw.say_only = said
            else:
                continue
            tw.say_voice, tw.say_language = el.get("voice"), el.get("language")
    return tw


def write_wav(path: str | Path, ulaw: bytes | bytearray) -> None:
    """Write 8 kHz µ-law audio as a PCM16 mono WAV."""
    import audioop

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(audioop.ulaw2lin(bytes(ulaw), 2))
