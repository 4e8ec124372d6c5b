"""Prometheus metrics without a server: the cost estimate, call events, labels, the dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import create_app
from bot.metrics import METRICS, CallRecorder, ServerMetrics
from bot.metrics_labels import close_code_label, end_reason_label
from bot.metrics_workers import merge_metrics
from bot.persona_store import PersonaStore
from bot.pricing import Pricing, PricingError
from bot.settings import Settings
from bot.stats import ProcessStats
from pipelines.gemini.clients import GeminiClients
from pipelines.gemini.usage import token_counts
from pipelines.ports import CallMetrics

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "voicebot-dashboard.json"
PERSONAS = ROOT / "tests" / "personas"

PRICES = {
    "models": {
        "default": {"input": {"text": 1.0}, "output": {"text": 4.0}},
        "gemini-3.8-live": {
            "input": {"text": 0.5, "audio": 3.0},
            "output": {"text": 2.0, "audio": 12.0},
        },
    }
}


def _value(metrics: ServerMetrics, name: str, **labels: str) -> float:
    want = set(labels.items())
    text = generate_latest(metrics.registry).decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and want <= set(s.labels.items())
    )


def test_cost_is_tokens_times_the_models_price_by_kind_and_modality() -> None:
    pricing = Pricing.parse(PRICES, "test")
    tokens = {
        ("prompt", "audio"): 1_000_000,  # 3.00
        ("prompt", "text"): 2_000_000,  # 1.00
        ("tool_prompt", "text"): 1_000_000,  # 0.50 (input price)
        ("response", "audio"): 500_000,  # 6.00
        ("thoughts", "text"): 1_000_000,  # 2.00 (output price)
        ("prompt", "unspecified"): 1_000_000,  # 0.50 (text price)
    }
    assert pricing.cost("models/gemini-3.8-live", tokens) == pytest.approx(13.0)
    # A model not listed uses `default`.
    assert pricing.cost("gemini-9-live", {("response", "audio"): 1_000_000}) == pytest.approx(4.0)
    assert Pricing().cost("gemini-3.8-live", tokens) == 0.0


def test_a_call_counts_its_tokens_and_cost_by_persona() -> None:
    metrics = ServerMetrics(Pricing.parse(PRICES, "test"), ProcessStats())
    call = metrics.call("sales", "models/gemini-3.8-live")
    usage = SimpleNamespace(
        prompt_token_count=1200,
        prompt_tokens_details=[
            SimpleNamespace(modality=SimpleNamespace(value="AUDIO"), token_count=1000),
            SimpleNamespace(modality="TEXT", token_count=150),
        ],
        response_token_count=250,
        response_tokens_details=[SimpleNamespace(modality="AUDIO", token_count=250)],
        thoughts_token_count=None,
        tool_use_prompt_token_count=None,
        tool_use_prompt_tokens_details=None,
    )
    counted = list(token_counts(usage))
    # 50 prompt tokens the details do not explain are "unspecified", not lost.
    assert counted == [
        ("prompt", "audio", 1000),
        ("prompt", "text", 150),
        ("prompt", "unspecified", 50),
        ("response", "audio", 250),
    ]
    for kind, modality, count in counted:
        call.add_tokens(kind, modality, count)
    expected = (1000 * 3.0 + 150 * 0.5 + 50 * 0.5 + 250 * 12.0) / 1e6
    assert call.cost_usd == pytest.approx(expected)
    assert _value(metrics, "voicebot_model_cost_usd_total", persona="sales") == pytest.approx(
        expected
    )
    assert _value(metrics, "voicebot_model_tokens_total", persona="sales", kind="prompt") == 1200
    assert _value(metrics, "voicebot_model_tokens_total", modality="audio") == 1250


def test_pricing_file_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "pricing.yaml"
    bad.write_text("models:\n  gemini-3.8-live:\n    input: {audio: -1}\n")
    with pytest.raises(PricingError, match=r"pricing.yaml: models.gemini-3.8-live.input"):
        Pricing.load(bad)
    shipped = Pricing.load(ROOT / "config" / "pricing.yaml")
    assert shipped.for_model("gemini-3.8-live").per_token("response", "audio") > 0


async def test_call_events_become_latencies_and_barge_ins() -> None:
    metrics = ServerMetrics(Pricing(), ProcessStats())
    call: CallMetrics = metrics.call("frontdesk", "gemini-3.8-live")
    call.session_ready()
    call.session_ready()  # a handover's new session is not a second setup
    call.bot_audio_sent()  # the greeting: first audio, no reply owed
    call.bot_audio_sent()
    call.caller_turn_ended(0.4)  # the caller went quiet 0.4 s ago
    call.bot_audio_sent()
    call.bot_audio_sent()
    call.barge_in("local_vad")
    call.barge_in("model")  # the same barge-in, reported again: the first source counts
    call.clear_done(True)
    call.barge_in("model")
    call.clear_done(False)  # nothing was playing: not a barge-in
    call.handover("go_away")
    call.reconnect("dropped")
    call.gemini_closed(1011)
    call.gemini_closed(4321)
    labels = {"persona": "frontdesk"}
    assert _value(metrics, "voicebot_setup_latency_seconds_count", **labels) == 1
    assert _value(metrics, "voicebot_first_audio_latency_seconds_count", **labels) == 1
    assert _value(metrics, "voicebot_response_latency_seconds_count", **labels) == 1
    assert 0.4 <= _value(metrics, "voicebot_response_latency_seconds_sum") < 0.5
    assert _value(metrics, "voicebot_barge_ins_total", source="local_vad") == 1
    assert _value(metrics, "voicebot_barge_ins_total", source="model") == 0
    assert _value(metrics, "voicebot_barge_in_clear_seconds_count") == 1
    assert _value(metrics, "voicebot_barge_in_clear_seconds_bucket", le="0.005") == 1
    assert _value(metrics, "voicebot_gemini_handovers_total", cause="go_away") == 1
    assert _value(metrics, "voicebot_gemini_reconnects_total", cause="dropped") == 1
    assert _value(metrics, "voicebot_gemini_closes_total", code="1011") == 1
    assert _value(metrics, "voicebot_gemini_closes_total", code="other") == 1


def test_call_ends_refusals_and_bad_input_have_bounded_labels() -> None:
    metrics = ServerMetrics(Pricing(), ProcessStats())
    metrics.call_started("frontdesk")
    assert _value(metrics, "voicebot_calls_active", persona="frontdesk") == 1
    metrics.call_ended(
        "frontdesk", "Live API closed 1008", {"invalid_json": 2, "Robert'); DROP": 1}
    )
    metrics.refused("capacity")
    metrics.refused("made up by a caller")
    assert _value(metrics, "voicebot_calls_active", persona="frontdesk") == 0
    assert _value(metrics, "voicebot_calls_ended_total", reason="model_failed") == 1
    assert _value(metrics, "voicebot_bad_input_messages_total", kind="invalid_json") == 2
    assert _value(metrics, "voicebot_bad_input_messages_total", kind="other") == 1
    assert _value(metrics, "voicebot_calls_refused_total", cause="capacity") == 1
    assert _value(metrics, "voicebot_calls_refused_total", cause="other") == 1


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("caller hung up", "caller_hung_up"),
        ("bot ended the call (end_call)", "bot_ended"),
        ("transferred", "transferred"),
        ("transfer failed", "transfer_failed"),
        ("max call duration reached", "max_duration"),
        ("caller idle", "caller_idle"),
        ("model unresponsive (reply)", "model_unresponsive"),
        ("Live API unreachable", "model_failed"),
        ("no media from Twilio for 10 s", "media_timeout"),
        ("stream closed 1006", "stream_closed"),
        ("server shutting down", "shutdown"),
        ("internal error", "internal_error"),
        (None, "other"),
    ],
)
def test_end_reasons_map_to_a_fixed_set(reason: str | None, label: str) -> None:
    assert end_reason_label(reason) == label


def test_close_codes_are_bounded() -> None:
    assert [close_code_label(c) for c in (None, 1000, 1011, 4999)] == [
        "none",
        "1000",
        "1011",
        "other",
    ]


def test_stats_histograms_export_lifetime_counts_through_a_reset() -> None:
    stats = ProcessStats()
    metrics = ServerMetrics(Pricing(), stats)
    for secs in (0.0004, 0.003, 0.02, 2.0):
        stats.loop_lag.add_secs(secs)
    stats.add_caller_audio_secs(0.04)
    stats.reset()  # /stats starts afresh; Prometheus counters must not go backwards
    assert stats.loop_lag.n == 0 and stats.loop_lag.percentile(50) is None
    stats.loop_lag.add_secs(0.0004)
    assert stats.loop_lag.summary()["count"] == 1 and stats.loop_lag.percentile(50) == 0.4
    name = "voicebot_event_loop_lag_seconds"
    assert _value(metrics, f"{name}_count") == 5
    assert _value(metrics, f"{name}_bucket", le="0.001") == 2
    assert _value(metrics, f"{name}_bucket", le="0.005") == 3
    assert _value(metrics, f"{name}_bucket", le="1.0") == 4
    assert _value(metrics, f"{name}_sum") == pytest.approx(2.0238)
    assert _value(metrics, "voicebot_audio_seconds_total", stream="caller_in") == 0.04


def _scraped_names(tmp_path: Path) -> set[str]:
    """Every sample name Prometheus scrapes: a real app's registry (records on, so every
    collector the app registers is there) through the ``--workers`` aggregate (``worker`` label,
    ``voicebot_worker_up``)."""
    settings = Settings(
        personas_dir=PERSONAS, database_url=f"sqlite:///{tmp_path / 'records.db'}", ops_listen="0"
    )
    app = create_app(settings, PersonaStore(PERSONAS), GeminiClients("test-key", "https://x"))
    page = generate_latest(app[METRICS].registry).decode()
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
    return {
        family.name + suffix
        for family in merge_metrics([page, None])
        for suffix in suffixes.get(family.type, ("",))
    }


def test_the_grafana_dashboard_shows_every_metric_and_only_real_ones(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]
    assert exprs and all(p.get("targets") for p in dashboard["panels"] if p["type"] != "row")
    referenced = {name for e in exprs for name in re.findall(r"\bvoicebot_[a-z_]+", e)}
    exported = _scraped_names(tmp_path)
    assert {"voicebot_warm_sessions_total", "voicebot_stream_relays_active"} <= exported
    assert referenced - exported == set(), "the dashboard queries metrics the server lacks"
    families = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in exported}
    shown = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in referenced}
    assert families - shown == set(), "metrics missing from the dashboard"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_an_answer_begun_before_the_local_turn_end_is_timed_from_the_last_word() -> None:
    # The model's own VAD ends the turn before ours does: its answer is already playing when
    # the local turn ends (stop_secs + the turn strategy's wait after the last word).
    metrics = ServerMetrics(Pricing(), ProcessStats())
    now = [100.0]
    call = CallRecorder(metrics, "frontdesk", "gemini-3.8-live", clock=lambda: now[0])
    call.bot_audio_sent()  # the greeting
    now[0] = 101.0
    call.caller_started()
    call.bot_audio_sent()  # the greeting's last chunk, still playing as they start: no answer
    now[0] = 103.5  # their last word was at 103.0
    call.bot_audio_sent()  # the answer begins, 0.5 s after it
    now[0] = 103.52
    call.bot_audio_sent()
    now[0] = 104.4
    call.caller_turn_ended(1.4)  # the local turn ends 1.4 s after the last word
    now[0] = 104.42
    call.bot_audio_sent()  # the answer goes on: not a second response
    labels = {"persona": "frontdesk"}
    assert _value(metrics, "voicebot_response_latency_seconds_count", **labels) == 1
    assert _value(metrics, "voicebot_response_latency_seconds_sum") == pytest.approx(0.5)

    # A turn the bot spoke over (its audio began before the last word) is not a response time;
    # a quiet turn end owes one as before.
    now[0] = 110.0
    call.caller_started()
    now[0] = 110.6
    call.bot_audio_sent()
    now[0] = 112.0
    call.caller_turn_ended(1.0)
    assert _value(metrics, "voicebot_response_latency_seconds_count", **labels) == 1
    now[0] = 120.0
    call.caller_started()
    now[0] = 121.0
    call.caller_turn_ended(0.4)
    now[0] = 121.3
    call.bot_audio_sent()
    assert _value(metrics, "voicebot_response_latency_seconds_count", **labels) == 2
    assert _value(metrics, "voicebot_response_latency_seconds_sum") == pytest.approx(0.5 + 0.7)
