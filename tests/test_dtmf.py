"""Keys the caller presses: batching into entries, mapped keys, and the persona's ``dtmf:``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from loguru import logger

from pipelines.call.control import CallControl, say_exactly
from pipelines.call.dtmf import KeypadEntries
from pipelines.personas.dtmf import Dtmf
from pipelines.personas.loader import load_persona_file
from sim.testing import wait_until

pytestmark = pytest.mark.unit

# Inter-digit timeouts in these tests: 2 s scaled down to 0.1 s.
SCALE = 0.05


class FakeModel:
    """Records entries sent; ``up`` says whether a connection is live."""

    def __init__(self, up: bool = True) -> None:
        self.sent: list[str] = []
        self.connected = asyncio.Event()
        if up:
            self.connected.set()

    async def send(self, text: str) -> bool:
        if not self.connected.is_set():
            return False
        self.sent.append(text)
        return True


class FakeControl:
    """Records the actions mapped keys take."""

    def __init__(self) -> None:
        self.ending: str | None = None
        self.presses = 0
        self.transfers: list[tuple[str, str | None, str]] = []
        self.ends: list[tuple[str | None, str]] = []

    def key_pressed(self) -> None:
        self.presses += 1

    async def transfer_now(self, to: str, announcement: str | None, reason: str) -> bool:
        self.transfers.append((to, announcement, reason))
        self.ending = reason
        return True

    async def end_now(self, goodbye: str | None, reason: str) -> bool:
        self.ends.append((goodbye, reason))
        self.ending = reason
        return True


def _keypad(settings: Dtmf, model: FakeModel, control: FakeControl) -> tuple[KeypadEntries, list]:
    replies: list[int] = []
    pad = KeypadEntries(
        settings,
        send=model.send,
        connected=model.connected,
        on_sent=lambda: replies.append(1),
        actions=control,
        time_scale=SCALE,
    )
    return pad, replies


async def _press(pad: KeypadEntries, keys: str, gap_secs: float = 0.0) -> None:
    for key in keys:
        await pad(key)
        await asyncio.sleep(gap_secs)


async def test_terminator_ends_the_entry_at_once_and_is_sent_with_it() -> None:
    model, control = FakeModel(), FakeControl()
    pad, replies = _keypad(Dtmf(), model, control)
    await _press(pad, "1234#")
    assert await wait_until(lambda: len(model.sent) == 1, 0.05)  # well before the 0.1 s timeout
    assert model.sent == ["The caller pressed these keys on the phone keypad: 1 2 3 4 #"]
    assert replies == [1] and pad.entries_sent == 1
    assert control.presses == 5
    await pad.stop()


async def test_an_entry_typed_while_the_caller_talks_waits_for_them_to_stop() -> None:
    # The model would otherwise answer the keys over the caller's words (seen in the barge-in
    # load test: keys pressed, then "goodbye" said at once).
    model, control = FakeModel(), FakeControl()
    quiet = asyncio.Event()  # the local VAD hears the caller speak
    pad = KeypadEntries(
        Dtmf(),
        send=model.send,
        connected=model.connected,
        on_sent=lambda: None,
        actions=control,
        time_scale=SCALE,
        caller_quiet=quiet,
    )
    await _press(pad, "1#")
    await asyncio.sleep(0.1)
    assert model.sent == []  # held while the caller speaks
    quiet.set()
    assert await wait_until(
        lambda: model.sent == ["The caller pressed these keys on the phone keypad: 1 #"], 0.5
    ), model.sent
    await pad.stop()


async def test_inter_digit_timeout_ends_the_entry() -> None:
    model, control = FakeModel(), FakeControl()
    pad, _ = _keypad(Dtmf(template="Keys: ${keys}"), model, control)
    await _press(pad, "42", gap_secs=0.03)  # each key within the timeout: one entry
    assert model.sent == []
    assert pad.pending == "42"
    assert await wait_until(lambda: model.sent == ["Keys: 4 2"], 1.0)
    await _press(pad, "7")  # the next key starts a new entry
    assert await wait_until(lambda: model.sent == ["Keys: 4 2", "Keys: 7"], 1.0)
    await pad.stop()


async def test_max_digits_ends_the_entry_and_the_rest_starts_another() -> None:
    model, control = FakeModel(), FakeControl()
    pad, _ = _keypad(Dtmf(max_digits=4, terminator=None, template="${keys}"), model, control)
    await _press(pad, "123456")
    assert await wait_until(lambda: model.sent == ["1 2 3 4"], 0.05)
    assert pad.pending == "56"
    assert await wait_until(lambda: model.sent == ["1 2 3 4", "5 6"], 1.0)
    await pad.stop()


async def test_entries_reach_the_model_in_the_order_typed_once_it_is_up() -> None:
    model, control = FakeModel(up=False), FakeControl()
    pad, _ = _keypad(Dtmf(template="${keys}"), model, control)
    await _press(pad, "1#2#")
    await asyncio.sleep(0.05)
    assert model.sent == []  # the session is not up yet: kept, not dropped
    model.connected.set()
    assert await wait_until(lambda: model.sent == ["1 #", "2 #"], 1.0)
    await pad.stop()


async def test_mapped_key_acts_only_when_it_starts_an_entry() -> None:
    model, control = FakeModel(), FakeControl()
    settings = Dtmf.model_validate(
        {
            "template": "${keys}",
            "keys": {
                "0": {"action": "transfer", "to": "+15551239999", "say": "Connecting you."},
                "9": {"action": "end_call", "say": "Goodbye!"},
            },
        }
    )
    pad, _ = _keypad(settings, model, control)
    await _press(pad, "109#")  # inside an entry, 0 and 9 are keys like any other
    assert await wait_until(lambda: model.sent == ["1 0 9 #"], 0.5)
    await _press(pad, "0")
    assert await wait_until(lambda: len(control.transfers) == 1, 0.5)
    assert control.transfers[0][:2] == ("+15551239999", "Connecting you.")
    assert "transfer" in control.transfers[0][2] and "0" not in control.transfers[0][2]
    assert pad.pending == ""  # the key was the action, not the start of an entry
    await _press(pad, "5#")  # the call is ending: entries are no longer sent
    await asyncio.sleep(0.05)
    assert model.sent == ["1 0 9 #"]
    await pad.stop()


async def test_end_call_key_and_disabled_dtmf() -> None:
    model, control = FakeModel(), FakeControl()
    settings = Dtmf.model_validate({"keys": {"*": {"action": "end_call"}}})
    pad, _ = _keypad(settings, model, control)
    await _press(pad, "*")
    assert await wait_until(lambda: control.ends == [(None, "caller key mapped to end_call")])
    await pad.stop()

    off, _ = _keypad(Dtmf(enabled=False), model, control)
    await _press(off, "12#")
    await asyncio.sleep(0.15)
    assert off.pending == "" and model.sent == [] and control.presses == 1
    await off.stop()


async def test_stop_drops_pending_keys_and_keys_never_reach_the_log(monkeypatch) -> None:
    monkeypatch.setattr("pipelines.call.dtmf.SEND_WAIT_SECS", 0.05)
    model, control = FakeModel(up=False), FakeControl()
    lines: list[str] = []
    # The message and its context only: a timestamp or line number may hold any digits.
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG", format="{message} {extra}")
    try:
        pad, _ = _keypad(Dtmf(template="${keys}", inter_digit_timeout_secs=1), model, control)
        await _press(pad, "8675309#")  # not sent (no session): a warning, without the keys
        await asyncio.sleep(0.15)
        await _press(pad, "31")
        await pad.stop()
    finally:
        logger.remove(sink)
    assert model.sent == [] and pad.pending == ""
    assert lines, "the unsent entry is logged"
    assert not [line for line in lines if "8 6 7" in line or "8675309" in line or "31" in line]


async def test_keys_faster_than_a_keypad_are_dropped() -> None:
    # A scripted flood of keys must not become a flood of model turns (each one billed).
    model, control = FakeModel(), FakeControl()
    pad, _ = _keypad(Dtmf(max_digits=10, template="${keys}"), model, control)
    await _press(pad, "1" * 100)  # at once: the burst of 20 keys passes, the rest is dropped
    assert await wait_until(lambda: len(model.sent) == 2, 0.5)
    assert pad.keys_dropped == 80 and control.presses == 20
    await asyncio.sleep(0.25)  # the allowance refills at 10 keys a second
    await _press(pad, "2#")
    assert await wait_until(lambda: model.sent[-1:] == ["2 #"], 0.5)
    await pad.stop()


# --- what mapped keys do in CallControl ------------------------------------------------


def _persona(tmp_path: Path) -> object:
    file = tmp_path / "front.yaml"
    file.write_text('default: true\nsystem_instruction: "Help."\n', encoding="utf-8")
    persona = load_persona_file(file).persona
    assert persona is not None
    return persona


async def test_transfer_key_redirects_at_once_and_only_once(tmp_path: Path) -> None:
    twimls: list[str] = []
    hung_up: list[str] = []

    async def redirect(twiml: str) -> bool:
        twimls.append(twiml)
        return True

    async def hang_up(reason: str) -> None:
        hung_up.append(reason)

    async def ignore(*_: object) -> bool:
        return True

    control = CallControl(
        _persona(tmp_path), instruct=ignore, hang_up=hang_up, redirect=redirect, wait_played=ignore
    )
    assert await control.transfer_now("+15551239999", "Connecting you.", "caller key")
    assert await wait_until(lambda: len(twimls) == 1, 1.0)
    assert "<Dial>+15551239999</Dial>" in twimls[0] and "Connecting you.</Say>" in twimls[0]
    assert control.ending == "caller key"
    assert not await control.transfer_now("+15551239999", None, "again")  # ending already
    assert not await control.end_now(None, "again")
    assert hung_up == []
    await control.stop()

    no_rest = CallControl(
        _persona(tmp_path), instruct=ignore, hang_up=hang_up, redirect=None, wait_played=ignore
    )
    assert not await no_rest.transfer_now("+15551239999", None, "caller key")
    assert no_rest.ending is None
    await no_rest.stop()


async def test_end_call_key_says_the_goodbye_or_hangs_up_at_once(tmp_path: Path) -> None:
    said: list[str] = []
    hung_up: list[str] = []

    async def instruct(text: str) -> bool:
        said.append(text)
        return True

    async def hang_up(reason: str) -> None:
        hung_up.append(reason)

    async def ignore(*_: object) -> bool:
        return True

    control = CallControl(
        _persona(tmp_path), instruct=instruct, hang_up=hang_up, redirect=None, wait_played=ignore
    )
    assert await control.end_now("Goodbye!", "caller key mapped to end_call")
    assert said == [say_exactly("Goodbye!")] and hung_up == []  # once the goodbye was played
    assert control.ending == "caller key mapped to end_call"
    await control.stop()

    at_once = CallControl(
        _persona(tmp_path), instruct=instruct, hang_up=hang_up, redirect=None, wait_played=ignore
    )
    assert await at_once.end_now(None, "caller key mapped to end_call")
    assert hung_up == ["caller key mapped to end_call"]
    await at_once.stop()


# --- the persona's dtmf: section, validated at load ------------------------------------


def _load(tmp_path: Path, dtmf_yaml: str) -> list[str]:
    file = tmp_path / "keys.yaml"
    file.write_text(
        'default: true\nsystem_instruction: "Help."\ndtmf:\n' + dtmf_yaml, encoding="utf-8"
    )
    return load_persona_file(file).errors


def test_a_valid_section_loads(tmp_path: Path) -> None:
    file = tmp_path / "keys.yaml"
    file.write_text(
        'default: true\nsystem_instruction: "Help."\n'
        "dtmf:\n"
        "  terminator: '*'\n"
        "  max_digits: 6\n"
        "  inter_digit_timeout_secs: 3\n"
        '  template: "Typed: ${keys}"\n'
        "  keys:\n"
        '    0: {action: transfer, to: "+15551239999", say: "Connecting you."}\n'
        '    "#": {action: end_call, say: "Goodbye!"}\n',
        encoding="utf-8",
    )
    result = load_persona_file(file)
    assert result.errors == []
    assert result.persona is not None
    d = result.persona.dtmf
    assert (d.terminator, d.max_digits, d.inter_digit_timeout_secs) == ("*", 6, 3.0)
    assert d.keys["0"].to == "+15551239999" and d.keys["#"].action == "end_call"
    assert d.entry_text("0123*") == "Typed: 0 1 2 3 *"


def test_defaults_send_keys_to_the_model_and_map_none(tmp_path: Path) -> None:
    file = tmp_path / "plain.yaml"
    file.write_text('default: true\nsystem_instruction: "Help."\n', encoding="utf-8")
    persona = load_persona_file(file).persona
    assert persona is not None
    d = persona.dtmf
    assert d.enabled and d.terminator == "#" and d.inter_digit_timeout_secs == 2.0
    assert d.keys == {}


@pytest.mark.parametrize(
    ("dtmf_yaml", "expected"),
    [
        (
            "  keys:\n    0: {action: transfer}\n",
            "keys.yaml:5: dtmf.keys.0: got action 'transfer' without 'to', expected the number",
        ),
        (
            "  keys:\n    9: {action: hangup}\n",
            "keys.yaml:5: dtmf.keys.9.action: got 'hangup', expected one of 'transfer' or "
            "'end_call'",
        ),
        (
            "  keys:\n    9: {action: transfer_call, to: '+15551239999'}\n",
            "did you mean 'transfer'?",
        ),
        (
            "  keys:\n    x: {action: end_call}\n",
            "keys.yaml:5: dtmf.keys.x.[key]: got 'x', expected one keypad key: 0-9, '*' or '#'",
        ),
        (
            "  keys:\n    12: {action: end_call}\n",
            "dtmf.keys.12.[key]: got '12', expected one keypad key",
        ),
        (
            "  keys:\n    1: {action: transfer, to: '5551239999'}\n",
            "keys.yaml:5: dtmf.keys.1.to: got '5551239999', expected an E.164 number",
        ),
        (
            "  keys:\n    1: {action: end_call, to: '+15551239999'}\n",
            "dtmf.keys.1: got 'to' '+15551239999' with action 'end_call', expected no 'to'",
        ),
        ("  terminator: '##'\n", "keys.yaml:4: dtmf.terminator: got '##', expected one keypad key"),
        (
            "  keys:\n    '#': {action: end_call}\n",
            "dtmf: got key '#' both as the terminator and in keys",
        ),
        ("  template: 'Keys pressed.'\n", "dtmf.template: got 'Keys pressed.', expected a text"),
        ("  template: '${keys} ${caller}'\n", "expected a text with ${keys} and no other"),
        ("  max_digits: 0\n", "dtmf.max_digits: got 0, expected greater than or equal to 1"),
        ("  enabled: false\n  keys:\n    0: {action: end_call}\n", "got keys with enabled: false"),
        ("  pin_length: 4\n", "dtmf.pin_length: got unknown key 'pin_length', expected one of"),
        (
            "  keys:\n    0: {action: end_call, sya: 'Bye.'}\n",
            "dtmf.keys.0: got unknown key 'sya', expected one of action, to, say; did you mean",
        ),
    ],
)
def test_bad_sections_fail_at_load_naming_file_and_field(
    tmp_path: Path, dtmf_yaml: str, expected: str
) -> None:
    errors = _load(tmp_path, dtmf_yaml)
    assert len(errors) == 1, errors
    assert str(tmp_path / "keys.yaml") in errors[0]
    assert expected in errors[0], errors[0]
