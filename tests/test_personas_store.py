"""Routing by the called number, the persona store's reloads (file change, SIGHUP), variables."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.persona_store import PersonaStore
from pipelines.personas import PersonaConfigError, call_variables, load_personas

pytestmark = pytest.mark.unit

RECEPTION = """\
voice: Charon
default: true
numbers: ["+15550001111"]
system_instruction: Reception. Caller ${caller} called ${called} at ${local_time} on ${weekday}.
greeting:
  mode: say
  text: Hello, ${custom.company} here.
custom_parameters:
  company: Acme
timezone: Europe/Madrid
"""
SALES = """\
voice: Puck
numbers: ["+15550002222", "+15550003333"]
system_instruction: Sales.
greeting:
  mode: wait
  text: null
"""


def make_dir(tmp_path: Path) -> Path:
    (tmp_path / "reception.yaml").write_text(RECEPTION)
    (tmp_path / "sales.yaml").write_text(SALES)
    return tmp_path


def touch_later(path: Path, text: str) -> None:
    """Write and push the mtime forward so a 1-tick change is always visible."""
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_routing_by_number_and_default(tmp_path: Path) -> None:
    personas = load_personas(make_dir(tmp_path))
    assert personas.for_number("+15550003333").id == "sales"
    assert personas.for_number("+15550001111").id == "reception"
    assert personas.for_number("+19999999999").id == "reception"
    assert personas.for_number(None).id == "reception"
    assert personas.get("sales") is personas.personas["sales"]
    assert personas.get("nope") is None
    with pytest.raises(TypeError):
        personas.personas["x"] = personas.default  # type: ignore[index]


def test_persona_is_immutable(tmp_path: Path) -> None:
    persona = load_personas(make_dir(tmp_path)).default
    with pytest.raises(ValueError, match="frozen"):
        persona.voice = "Puck"


def test_call_variables_and_rendering(tmp_path: Path) -> None:
    persona = load_personas(make_dir(tmp_path)).default
    now = datetime(2026, 3, 2, 13, 5, tzinfo=UTC)  # a Monday; 14:05 in Madrid
    variables = call_variables(
        persona, caller="+15557654321", called="+15550001111", custom={"company": "Globex"},
        now=now,
    )  # fmt: skip
    assert persona.render_system_instruction(variables) == (
        "Reception. Caller +15557654321 called +15550001111 at 14:05 on Monday."
    )
    assert persona.greeting_instruction(variables) == (
        "The call has just connected. Greet the caller by saying exactly these words, word for "
        'word, and nothing else:\nHello, "Globex" here.'
    )
    defaults = call_variables(persona, caller="a", called="b", custom={}, now=now)
    assert defaults["custom.company"] == "Acme"
    assert defaults["local_date"] == "2026-03-02"


def test_greeting_modes(tmp_path: Path) -> None:
    personas = load_personas(make_dir(tmp_path))
    assert personas.get("sales").greeting_instruction({}) is None  # type: ignore[union-attr]
    instruct = SALES.replace("mode: wait\n  text: null", "mode: instruct\n  text: Offer help.")
    (tmp_path / "sales.yaml").write_text(instruct)
    sales = load_personas(tmp_path).get("sales")
    assert sales is not None
    assert sales.greeting_instruction({}) == "The call has just connected. Offer help."


def test_reload_keeps_old_objects_and_refuses_bad_edit(tmp_path: Path) -> None:
    store = PersonaStore(make_dir(tmp_path))
    in_call = store.current.for_number("+15550002222")  # a call in progress holds this
    old_set = store.current
    touch_later(tmp_path / "sales.yaml", SALES.replace("Puck", "Kore"))
    assert store.reload() is True
    assert store.current is not old_set
    assert store.current.get("sales").voice == "Kore"  # type: ignore[union-attr]
    assert in_call.voice == "Puck"  # the in-progress call is unaffected
    good_set = store.current
    touch_later(tmp_path / "sales.yaml", SALES.replace("Puck", "Bob"))
    assert store.reload() is False
    assert store.current is good_set
    assert store.refusals == 1


def test_initial_bad_load_raises(tmp_path: Path) -> None:
    (tmp_path / "reception.yaml").write_text(RECEPTION.replace("Charon", "Bob"))
    with pytest.raises(PersonaConfigError, match=r"reception\.yaml:1: voice: got 'Bob'"):
        PersonaStore(tmp_path)


async def wait_for(predicate: Callable[[], bool]) -> None:
    """Poll a counter the store bumps from its worker thread (no event to wait on)."""
    async with asyncio.timeout(5.0):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_watch_task_reloads_on_file_change(tmp_path: Path) -> None:
    store = PersonaStore(make_dir(tmp_path), poll_secs=0.02)
    await store.start()
    try:
        touch_later(tmp_path / "sales.yaml", SALES.replace("Puck", "Kore"))
        await wait_for(lambda: store.reloads == 1)
        assert store.current.get("sales").voice == "Kore"  # type: ignore[union-attr]
        touch_later(tmp_path / "sales.yaml", "voice: [unclosed\n")
        await wait_for(lambda: store.refusals == 1)
        assert store.current.get("sales").voice == "Kore"  # type: ignore[union-attr]
    finally:
        await store.stop()
    assert store._task is None


async def test_sighup_triggers_reload(tmp_path: Path) -> None:
    store = PersonaStore(make_dir(tmp_path), poll_secs=60.0)  # polling cannot be what reloads
    store.install_sighup(asyncio.get_running_loop())
    await store.start()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_for(lambda: store.reloads == 1)
    finally:
        await store.stop()
    # Without the watch task, SIGHUP reloads at once.
    store.install_sighup(asyncio.get_running_loop())
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_for(lambda: store.reloads == 2)
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
