"""The post-call webhook's pieces: signature, backoff, what is retried, the body, the schema field.

Delivery over a real socket (retries, no retry on 400, the whole call) is in
``tests/test_post_call_e2e.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from bot.post_call import (
    Delivery,
    PostCallSender,
    backoff_secs,
    payload,
    retry_after_secs,
    should_retry,
)
from bot.records.record import summarise_call
from bot.webhook_signature import sign, verify
from pipelines.personas.loader import load_persona_file
from pipelines.personas.sections import PostCallWebhook
from pipelines.ports import TranscriptTurn

pytestmark = pytest.mark.unit

SECRET = b"whsec-test-0123456789"
BODY = b'{"event":"call.ended","id":"k1"}'
PERSONAS = Path(__file__).parent / "personas"


def test_the_signature_is_stripe_style_hmac_of_timestamp_dot_body() -> None:
    header = sign(SECRET, BODY, 1_790_000_000)
    match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", header)
    assert match is not None, header
    assert match[1] == "1790000000"
    expected = hmac.new(SECRET, b"1790000000." + BODY, hashlib.sha256).hexdigest()
    assert match[2] == expected


def test_verify_accepts_a_fresh_signature_and_refuses_tampering_and_replays() -> None:
    now = 1_790_000_000
    header = sign(SECRET, BODY, now)
    assert verify(SECRET, BODY, header, now=now + 10)
    assert not verify(SECRET, BODY + b" ", header, now=now)  # body changed
    assert not verify(b"another secret", BODY, header, now=now)  # wrong secret
    assert not verify(SECRET, BODY, header, now=now + 301)  # older than the 5 min tolerance
    assert not verify(SECRET, BODY, header.replace(f"t={now}", f"t={now + 1}"), now=now)
    assert not verify(SECRET, BODY, "v1=abc", now=now)  # no timestamp
    assert not verify(SECRET, BODY, "garbage", now=now)
    # A receiver rotating secrets may see several v1 values: one match is enough.
    other = sign(b"old secret", BODY, now).partition(",")[2]
    assert verify(SECRET, BODY, f"{header},{other}", now=now)


def test_backoff_doubles_from_the_first_wait_up_to_the_cap_with_jitter() -> None:
    top = [backoff_secs(n, 1.0, 20.0, rng=lambda: 1.0) for n in range(1, 8)]
    assert top == [1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0]
    low = [backoff_secs(n, 1.0, 20.0, rng=lambda: 0.0) for n in range(1, 8)]
    assert low == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]  # equal jitter: [cap / 2, cap]
    assert 0.5 <= backoff_secs(1) <= 1.0  # the default: 1 s first, random within


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    assert retry_after_secs("7") == 7.0
    assert retry_after_secs("Wed, 21 Oct 2026 07:28:05 GMT", now=1_792_567_680.0) == 5.0
    assert retry_after_secs(None) is None
    assert retry_after_secs("soon") is None
    assert retry_after_secs("-3") is None


@pytest.mark.parametrize(
    ("status", "retried"),
    [
        (None, True),  # no answer: refused, reset, timed out
        (408, True),
        (429, True),
        (500, True),
        (503, True),
        (400, False),
        (401, False),
        (404, False),
        (410, False),
        (301, False),  # redirects are not followed: the URL is wrong
    ],
)
def test_only_no_answer_timeouts_429_and_5xx_are_retried(status: int | None, retried: bool) -> None:
    assert should_retry(status) is retried


def _summary(transcript_kept: bool = True):  # type: ignore[no-untyped-def]
    s = summarise_call(
        call_sid="CA123", stream_sid="MZ123", persona="frontdesk", caller="+15551230123",
        called="+15005550006", duration_secs=12.5, end_reason="caller hung up",
    )  # fmt: skip
    turns = (
        TranscriptTurn("bot", "Hello.", 0.4, False, "Hello.", 1.1),
        TranscriptTurn("caller", "Hi, when are you open?", 2.0),
    )
    return dataclasses.replace(s, turns=turns, transcript_kept=transcript_kept)


def test_the_body_is_the_record_with_masked_numbers_and_the_transcript() -> None:
    body = json.loads(payload(_summary(), "key-1", transcript=True))
    assert body["event"] == "call.ended" and body["id"] == "key-1"
    call = body["call"]
    assert call["call_sid"] == "CA123" and call["persona"] == "frontdesk"
    assert call["caller"] == "+1******0123"  # masked as the records are
    assert call["end_reason"] == "caller hung up" and call["duration_secs"] == 12.5
    assert call["started_at"].endswith("+00:00")  # ISO 8601, UTC
    assert [t["speaker"] for t in body["transcript"]] == ["bot", "caller"]
    assert body["transcript"][0]["heard_text"] == "Hello."
    off = json.loads(payload(_summary(False), "key-1", transcript=False))
    assert off["transcript"] is None and off["call"]["transcript_kept"] is False


def test_a_full_queue_drops_the_oldest_and_counts_it() -> None:
    seen: list[tuple[str, str]] = []
    sender = PostCallSender(lambda _: "s", max_queue=2, on_outcome=lambda *a: seen.append(a))

    def delivery(sid: str) -> Delivery:
        return Delivery(sid, "frontdesk", "http://127.0.0.1:9/", SECRET, 1.0, 3, _summary(), True)

    for sid in ("CA1", "CA2", "CA3"):
        sender.submit(delivery(sid))
    stats = sender.stats()
    assert stats["submitted"] == 3 and stats["dropped"] == 1 and stats["queued"] == 2, stats
    assert seen == [("frontdesk", "dropped")]


def test_a_persona_without_a_webhook_costs_nothing() -> None:
    sender = PostCallSender(lambda _: "s")
    persona = SimpleNamespace(id="frontdesk", post_call_webhook=None)
    sender.call_ended(SimpleNamespace(call_sid="CA1"), persona, 1.0, "caller hung up", None, {})
    assert sender.stats()["submitted"] == 0


# --- the persona field -------------------------------------------------------------------


def _persona_file(tmp_path: Path, hook: str) -> Path:
    text = (PERSONAS / "frontdesk.yaml").read_text() + hook
    path = tmp_path / "frontdesk.yaml"
    path.write_text(text)
    return path


def test_an_unset_secret_variable_stops_the_load_naming_file_line_field_and_fix(
    tmp_path: Path,
) -> None:
    # The server hands its environment to the loader (bot.settings.process_environ).
    hook = (
        "post_call_webhook:\n  url: https://crm.example.com/hooks\n  secret_env: TEST_HOOK_SECRET\n"
    )
    path = _persona_file(tmp_path, hook)
    result = load_persona_file(path, {"OTHER": "x"})
    assert result.persona is None
    line = len((PERSONAS / "frontdesk.yaml").read_text().splitlines()) + 3
    (error,) = result.errors
    assert error.startswith(f"{path}:{line}: post_call_webhook.secret_env: got 'TEST_HOOK_SECRET'")
    assert "not set" in error and "export TEST_HOOK_SECRET=" in error

    result = load_persona_file(path, {"TEST_HOOK_SECRET": "s3cret"})
    assert result.errors == [] and result.persona is not None
    webhook = result.persona.post_call_webhook
    assert webhook is not None and webhook.url == "https://crm.example.com/hooks"
    assert (webhook.timeout_secs, webhook.max_attempts) == (5.0, 5)  # the defaults
    assert "s3cret" not in result.persona.model_dump_json()  # the name is kept, not the secret


def test_bad_webhook_fields_say_what_was_expected(tmp_path: Path) -> None:
    hook = (
        "post_call_webhook:\n  url: ftp://crm.example.com/x\n  secret_env: my-secret\n"
        "  max_attempts: 0\n"
    )
    errors = "\n".join(load_persona_file(_persona_file(tmp_path, hook)).errors)
    assert "post_call_webhook.url: got 'ftp://crm.example.com/x', expected an http://" in errors
    assert "post_call_webhook.secret_env: got 'my-secret', expected the NAME" in errors
    assert "post_call_webhook.max_attempts: got 0" in errors


def test_the_environment_can_be_handed_in_as_validation_context() -> None:
    data = {"url": "http://127.0.0.1:8000/hook", "secret_env": "CTX_ONLY_SECRET"}
    hook = PostCallWebhook.model_validate(data, context={"environ": {"CTX_ONLY_SECRET": "x"}})
    assert hook.secret_env == "CTX_ONLY_SECRET"
    with pytest.raises(ValidationError, match="not set"):
        PostCallWebhook.model_validate(data, context={"environ": {}})


def test_the_readme_verification_example_accepts_our_signature() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("### Post-call webhook", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict[str, object] = {}
    exec(code, scope)  # the receiver's 5 lines, as an operator would copy them
    receiver_verify = scope["verify"]
    header = sign(SECRET, BODY, int(time.time()))
    assert receiver_verify(SECRET, BODY, header) is True  # type: ignore[operator]
    assert receiver_verify(b"wrong", BODY, header) is False  # type: ignore[operator]
