"""Operations listener and production mode, piece by piece (no sockets).

The attacks themselves are performed end to end in ``tests/test_ops_listener_e2e.py`` and
``tests/test_production_mode_e2e.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request
from loguru import logger

from bot.listen_address import (
    ListenAddress,
    OpsExposureError,
    check_ops_exposure,
    is_loopback_host,
    parse_listen,
    reachable_from_outside,
)
from bot.ops import OpsAuth
from bot.serve_cmd import NoKeyInProduction, gemini_source
from bot.server import ServeOptions, serve
from bot.settings import Settings, SettingsError
from pipelines.personas import explain_rejection
from pipelines.personas.schema import Persona
from sim.emulator import rest

pytestmark = pytest.mark.unit


def test_listen_addresses_parse_and_refuse_clearly() -> None:
    assert parse_listen("9464") == ListenAddress("127.0.0.1", 9464)
    assert parse_listen("0") == ListenAddress("127.0.0.1", 0)
    assert parse_listen("0.0.0.0:9464") == ListenAddress("0.0.0.0", 9464)
    assert parse_listen("[::1]:9464") == ListenAddress("::1", 9464)
    assert parse_listen("OFF") is None
    assert ListenAddress("::1", 9).url() == "http://[::1]:9"
    for bad in ("http", "1:99999", ":9464", "[::1]9464", "host:"):
        with pytest.raises(ValueError, match="got"):
            parse_listen(bad)
    with pytest.raises(SettingsError, match="VOICEBOT_OPS_PORT: .*expected PORT"):
        Settings.from_env({"VOICEBOT_OPS_PORT": "nine"})
    assert Settings.from_env({}).ops_address == ListenAddress("127.0.0.1", 9464)


def test_loopback_is_judged_strictly() -> None:
    for host in ("127.0.0.1", "127.8.0.1", "::1", "localhost", "::ffff:127.0.0.1"):
        assert is_loopback_host(host), host
    for host in ("0.0.0.0", "::", "", "10.0.0.5", "bot.example.com", "127.0.0.1.nip.io"):
        assert not is_loopback_host(host), host


def test_an_ops_listener_open_to_the_network_needs_a_token() -> None:
    check_ops_exposure(Settings())  # 127.0.0.1:9464, no token: fine
    check_ops_exposure(Settings(ops_listen="off"))
    check_ops_exposure(Settings(ops_listen="0.0.0.0:9464", ops_token="t"))
    with pytest.raises(OpsExposureError, match=r"VOICEBOT_OPS_TOKEN is not set.*--ops-port"):
        check_ops_exposure(Settings(ops_listen="0.0.0.0:9464"))


async def test_serve_refuses_an_open_ops_listener_before_doing_anything(capsys) -> None:
    options = ServeOptions(port=0)
    assert await serve(Settings(ops_listen="0.0.0.0:0", personas_dir=Path("nowhere")), options) == 1
    assert "VOICEBOT_OPS_TOKEN" in capsys.readouterr().err


def test_bearer_check_and_rate_limited_refusal_log() -> None:
    now = [100.0]
    auth = OpsAuth("s3cret", log_window_secs=10.0, clock=lambda: now[0])
    ok = make_mocked_request("GET", "/stats", headers={"Authorization": "Bearer s3cret"})
    assert auth.refusal(ok) is None
    cases = {
        None: "no Authorization header",
        "Basic s3cret": "Authorization is not a Bearer token",
        "Bearer s3cre": "wrong bearer token",
        "Bearer s3cret ": "wrong bearer token",
    }
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING", format="{message}")
    try:
        for header, reason in cases.items():
            request = make_mocked_request(
                "GET", "/stats", headers={"Authorization": header} if header else {}
            )
            assert auth.refusal(request) == reason
            auth.note_refusal(request, reason)
        now[0] += 11.0
        auth.note_refusal(make_mocked_request("POST", "/stats/reset"), "no Authorization header")
    finally:
        logger.remove(sink)
    assert auth.refused == 5
    assert len(lines) == 2, lines
    assert "no Authorization header" in lines[0] and "more refused" not in lines[0]
    assert "POST /stats/reset" in lines[1] and "(3 more refused since the last line)" in lines[1]
    assert not [line for line in lines if "s3cret" in line]
    assert OpsAuth(None).refusal(make_mocked_request("GET", "/stats")) is None


def test_production_mode_is_a_token_or_a_public_bind() -> None:
    assert reachable_from_outside(Settings(), "127.0.0.1") is None
    assert reachable_from_outside(Settings(), "localhost") is None
    assert reachable_from_outside(Settings(twilio_auth_token="t"), "127.0.0.1") == (
        "TWILIO_AUTH_TOKEN is set"
    )
    assert "not a loopback" in (reachable_from_outside(Settings(), "0.0.0.0") or "")


def test_no_key_in_production_refuses_unless_emulator_is_explicit() -> None:
    with pytest.raises(NoKeyInProduction, match=r"GEMINI_API_KEY is not set.*--emulator"):
        gemini_source(Settings(), force_emulator=False, exposed="TWILIO_AUTH_TOKEN is set")
    assert gemini_source(Settings(), force_emulator=True, exposed="x") is not None  # emulator
    assert gemini_source(Settings(), force_emulator=False, exposed=None) is not None  # dev
    assert gemini_source(Settings(gemini_api_key="k"), False, "x") is None  # the key, checked


def test_a_rejected_key_is_blamed_on_the_key_not_the_persona(tmp_path: Path) -> None:
    persona = Persona.model_validate(
        {"id": "sales", "source": tmp_path / "sales.yaml", "system_instruction": "Be brief."}
    )
    message = explain_rejection(persona, 1007, "API key not valid. Please pass a valid API key.")
    assert message.startswith("GEMINI_API_KEY: ")
    assert "sales" not in message and "persona is not the problem" in message
    # Other rejections still name the persona file.
    assert str(tmp_path / "sales.yaml") in explain_rejection(persona, 1008, "models/x not found")


def test_emulator_rest_errors_have_googles_shape() -> None:
    body = rest.error_body(400, "API key not valid. Please pass a valid API key.")
    error = body["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert error["details"][0]["reason"] == "API_KEY_INVALID"
    assert rest.error_body(403, "Method doesn't allow unregistered callers")["error"]["status"] == (
        "PERMISSION_DENIED"
    )
    page = rest.models_page("1")
    assert len(page["models"]) == 1 and "nextPageToken" in page
    assert page["models"][0]["name"].startswith("models/gemini-")
