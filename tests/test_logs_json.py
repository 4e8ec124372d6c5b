"""Log lines (``bot.logs``): dated, with the call's id, and one JSON object per line on demand."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest
from loguru import logger

from bot.logs import setup_logging

pytestmark = pytest.mark.unit

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CALL_SID = "CA0123456789abcdef0123456789abcdef"


@pytest.fixture
def sink() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield buffer
    logger.remove()
    logger.add(sys.stderr)  # loguru's own default, as the other tests found it
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def _objects(buffer: io.StringIO) -> list[dict]:
    lines = buffer.getvalue().splitlines()
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]  # every line is one whole JSON object


def test_json_lines_parse_and_carry_the_call_inside_a_call(sink: io.StringIO) -> None:
    setup_logging("INFO", "json", sink=sink)
    logger.info("server listening on {}", "http://0.0.0.0:8080")
    with logger.contextualize(call_sid=CALL_SID, persona="receptionist"):
        logger.info('call started: "quoted" {braces} and \\ backslash')
        logger.bind(caller="+15551230000").warning("a bound value that is not written")
    logger.debug("below the level: not written")

    before, started, warned = _objects(sink)
    for obj in (before, started, warned):
        assert ISO_UTC.match(obj["ts"]), obj["ts"]
        assert obj["logger"] == __name__
    assert before == {
        "ts": before["ts"],
        "level": "INFO",
        "message": "server listening on http://0.0.0.0:8080",
        "logger": __name__,
    }
    assert started["message"] == 'call started: "quoted" {braces} and \\ backslash'
    assert (started["call_sid"], started["persona"]) == (CALL_SID, "receptionist")
    assert warned["level"] == "WARNING" and warned["call_sid"] == CALL_SID
    assert "+15551230000" not in sink.getvalue()


def test_an_exception_is_one_json_object_with_its_traceback_and_no_locals(
    sink: io.StringIO,
) -> None:
    setup_logging("INFO", "json", sink=sink)

    def handle(audio: bytes) -> float:
        caller = "+1555" + "1230000"  # a local's value (not in the source lines shown)
        return len(audio) / len(caller[:0])

    with logger.contextualize(call_sid=CALL_SID):
        try:
            handle(b"\xff" * 160)
        except ZeroDivisionError:
            logger.exception("call failed")

    (obj,) = _objects(sink)
    assert obj["level"] == "ERROR" and obj["message"] == "call failed"
    assert obj["call_sid"] == CALL_SID
    trace = obj["exception"]
    assert trace.startswith("Traceback (most recent call last):")
    assert "in handle" in trace and trace.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "+15551230000" not in sink.getvalue()  # diagnose=False: no local variables


def test_standard_library_logging_comes_out_in_the_same_shape(sink: io.StringIO) -> None:
    setup_logging("INFO", "json", sink=sink)
    try:
        raise ConnectionResetError("peer went away")
    except ConnectionResetError:
        logging.getLogger("aiohttp.server").error("Error handling request", exc_info=True)
    logging.getLogger("aiohttp.access").info("stdlib INFO stays out at the default level")

    (obj,) = _objects(sink)
    assert obj["level"] == "ERROR" and obj["message"] == "Error handling request"
    assert obj["logger"] == "aiohttp.server"
    assert ISO_UTC.match(obj["ts"])
    assert "ConnectionResetError: peer went away" in obj["exception"]


def test_text_lines_are_dated_and_name_the_call(sink: io.StringIO) -> None:
    setup_logging("INFO", "text", sink=sink)
    logger.info("outside a call")
    with logger.contextualize(call_sid=CALL_SID, persona="receptionist"):
        logger.info("call ended: caller_hung_up")

    outside, inside = sink.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(stamp + r" INFO    outside a call", outside), outside
    assert re.fullmatch(stamp + rf" INFO    \[{CALL_SID}\] call ended: caller_hung_up", inside)


def test_an_unknown_format_is_refused_by_name(sink: io.StringIO) -> None:
    with pytest.raises(ValueError, match="log format: got 'xml', expected text or json"):
        setup_logging("INFO", "xml", sink=sink)  # type: ignore[arg-type]


def test_the_format_is_chosen_by_flag_over_environment() -> None:
    import argparse

    from bot.serve_cmd import configure
    from bot.settings import Settings, SettingsError

    parser = argparse.ArgumentParser()
    configure(parser)
    assert parser.parse_args([]).log_format is None
    flag = parser.parse_args(["--log-format", "json"]).log_format
    assert Settings.from_env({"VOICEBOT_LOG_FORMAT": "text"}, log_format=flag).log_format == "json"
    assert Settings.from_env({"VOICEBOT_LOG_FORMAT": "json"}).log_format == "json"
    assert Settings.from_env({}).log_format == "text"
    with pytest.raises(SettingsError, match="VOICEBOT_LOG_FORMAT: .*'text' or 'json'"):
        Settings.from_env({"VOICEBOT_LOG_FORMAT": "xml"})
