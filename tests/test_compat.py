"""The quarantine: no import patches a library; the start-up check names what is missing."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.server import ServeOptions, serve
from bot.settings import Settings
from pipelines import _compat
from pipelines._compat.accesses import ACCESSES, PrivateAccess

pytestmark = [pytest.mark.unit, pytest.mark.cpu_heavy]

ROOT = Path(__file__).resolve().parent.parent

# Imports every module of pipelines/ and bot/ (not ``__main__``s), then reports whose methods
# the three patched-by-someone places hold.
PROBE = """
import asyncio.events, importlib, json, pathlib, sys
root = pathlib.Path(sys.argv[1])
for package in ("pipelines", "bot"):
    for path in sorted((root / package).rglob("*.py")):
        if path.name == "__main__.py":
            continue
        parts = path.relative_to(root).with_suffix("").parts
        importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame
from pipecat.transports.base_output import BaseOutputTransport
print(json.dumps({
    "InputAudioRawFrame.__str__": InputAudioRawFrame.__str__.__module__,
    "OutputAudioRawFrame.__str__": OutputAudioRawFrame.__str__.__module__,
    "MediaSender._next_frame": BaseOutputTransport.MediaSender._next_frame.__module__,
    "Handle._run": asyncio.events.Handle._run.__module__,
}))
"""


def test_importing_every_module_patches_no_library_class() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    owners = json.loads(out.stdout.strip().splitlines()[-1])
    assert owners == {
        "InputAudioRawFrame.__str__": "pipecat.frames.frames",
        "OutputAudioRawFrame.__str__": "pipecat.frames.frames",
        "MediaSender._next_frame": "pipecat.transports.base_output",
        "Handle._run": "asyncio.events",
    }


def test_check_passes_on_the_pinned_install() -> None:
    _compat.check()
    assert len(ACCESSES) == len({(a.owner, a.name) for a in ACCESSES})


def test_a_missing_attribute_names_owner_file_and_fix() -> None:
    rows = (
        PrivateAccess(
            "pipecat.transports.base_output:BaseOutputTransport.MediaSender",
            "_renamed_upstream",
            ("pipelines/twilio/output_queue.py",),
            "test",
        ),
        PrivateAccess("google.genai", "_no_such_module", ("pipelines/x.py",), "test"),
        PrivateAccess("pipecat.nowhere:Thing", "_x", ("pipelines/y.py",), "test"),
        # Instance attributes set in __init__ count as present.
        PrivateAccess(
            "pipecat.transports.base_output:BaseOutputTransport.MediaSender",
            "_audio_queue",
            ("pipelines/twilio/output_queue.py",),
            "test",
        ),
    )
    with pytest.raises(_compat.CompatError) as caught:
        _compat.check(rows)
    message = str(caught.value)
    assert "BaseOutputTransport.MediaSender._renamed_upstream: missing" in message
    assert "used in pipelines/twilio/output_queue.py" in message
    assert "google.genai._no_such_module: missing" in message
    assert "pipecat.nowhere:Thing: not found" in message
    assert "_audio_queue" not in message
    assert "Fix: install the pinned versions" in message
    assert "pipelines/_compat" in message


def test_a_version_outside_the_pin_is_an_error() -> None:
    with pytest.raises(_compat.CompatError) as caught:
        _compat.check((), {"pipecat-ai": ((1, 15, 0), (1, 16)), "no-such-dist": ((1,), (2,))})
    message = str(caught.value)
    assert "pipecat-ai: installed 1.14.0, expected >=1.15.0,<1.16" in message
    assert "no-such-dist: not installed" in message


async def test_serve_with_a_failing_check_is_a_one_line_startup_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail() -> None:
        raise _compat.CompatError("pipecat-ai 9.9.9 is installed; expected >=1.14.0,<1.14.1")

    @contextlib.asynccontextmanager
    async def no_gemini():  # type: ignore[no-untyped-def]
        yield None

    monkeypatch.setattr(_compat, "check", fail)
    settings = Settings(personas_dir=ROOT / "tests" / "personas")
    code = await serve(settings, ServeOptions(port=0), no_gemini)
    assert code == 1
    err = capsys.readouterr().err
    assert "voicebot serve: pipecat-ai 9.9.9 is installed" in err
