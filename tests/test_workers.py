"""``bot.workers`` and ``bot.metrics_workers`` without processes: plan, indices, merging."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.calls import WRAP_UP_SECS
from bot.metrics_workers import merge_metrics, merge_stats
from bot.server import ServeOptions
from bot.settings import Settings
from bot.workers import WorkersError, assign_index, make_plan

pytestmark = pytest.mark.unit


def _page(started: int, active: int) -> str:
    r = CollectorRegistry()
    Counter("voicebot_calls_started", "d", ["persona"], registry=r).labels("a").inc(started)
    Gauge("voicebot_calls_active", "d", ["persona"], registry=r).labels("a").set(active)
    Histogram("voicebot_setup_latency_seconds", "d", buckets=(0.5, 1.0), registry=r).observe(0.7)
    return generate_latest(r).decode()


def _encode(families) -> str:
    class C:
        def collect(self):
            return families

    r = CollectorRegistry(auto_describe=False)
    r.register(C())  # type: ignore[arg-type]
    return generate_latest(r).decode()


def test_merged_metrics_label_each_worker_and_sum_to_the_total():
    text = _encode(merge_metrics([_page(3, 1), _page(4, 2), None]))
    families = {f.name: f for f in text_string_to_metric_families(text)}
    started = {
        s.labels["worker"]: s.value
        for s in families["voicebot_calls_started"].samples
        if s.name.endswith("_total")
    }
    assert started == {"0": 3.0, "1": 4.0}
    active = {s.labels["worker"]: s.value for s in families["voicebot_calls_active"].samples}
    assert active == {"0": 1.0, "1": 2.0}
    buckets = [
        s for s in families["voicebot_setup_latency_seconds"].samples if s.name.endswith("_bucket")
    ]
    assert {s.labels["worker"] for s in buckets} == {"0", "1"}
    up = {s.labels["worker"]: s.value for s in families["voicebot_worker_up"].samples}
    assert up == {"0": 1.0, "1": 1.0, "2": 0.0}
    # One HELP/TYPE per family, its samples together (Prometheus' text format).
    assert text.count("# TYPE voicebot_calls_started_total counter") == 1


def test_merged_stats_sum_calls_and_keep_each_worker():
    merged = merge_stats([{"calls": 2, "uptime_secs": 1}, "no answer", {"calls": 5}])
    assert merged["calls"] == 7 and merged["workers_up"] == 2
    assert merged["workers"]["1"] == {"error": "no answer"}
    assert merged["workers"]["2"] == {"calls": 5}


def test_worker_indices_are_the_lowest_free_so_a_restart_takes_its_ports():
    arbiter = SimpleNamespace(WORKERS={})
    workers = []
    for pid in range(3):
        w = SimpleNamespace()
        assign_index(arbiter, w)
        arbiter.WORKERS[pid] = w
        workers.append(w)
    assert [w.index for w in workers] == [0, 1, 2]
    del arbiter.WORKERS[1]  # worker 1 died
    again = SimpleNamespace()
    assign_index(arbiter, again)
    assert again.index == 1


def test_plan_gives_each_worker_its_ports_and_covers_the_drain():
    settings = Settings(ops_listen="127.0.0.1:9464", time_scale=1.0)
    plan = make_plan(2, settings, ServeOptions(port=8080, drain_secs=850), False, None)
    assert plan.peer_url(0) == "http://127.0.0.1:8081"
    assert plan.peer_url(1) == "http://127.0.0.1:8082"
    one = plan.worker_settings(1)
    assert one.ops_listen == "127.0.0.1:9466"
    assert one.peer_url == "http://127.0.0.1:8082"
    assert plan.graceful_timeout >= 850 + WRAP_UP_SECS


def test_plan_takes_the_peer_base_from_voicebot_peer_url():
    settings = Settings(peer_url="http://10.1.2.3:8100")
    plan = make_plan(3, settings, ServeOptions(port=8080), False, None)
    assert [plan.peer_url(i) for i in range(3)] == [
        "http://10.1.2.3:8100",
        "http://10.1.2.3:8101",
        "http://10.1.2.3:8102",
    ]


@pytest.mark.parametrize(
    ("workers", "settings", "needle"),
    [
        (0, {}, "expected 1 or more"),
        (2, {"ops_listen": "0"}, "fixed operations port"),
        (2, {"peer_url": "http://10.1.2.3:8080"}, "include the public port 8080"),
        (2, {"ops_listen": "0.0.0.0:9464"}, "VOICEBOT_OPS_TOKEN is not set"),
    ],
)
def test_plan_refuses_what_cannot_work(workers, settings, needle):
    with pytest.raises(WorkersError, match=needle):
        make_plan(workers, Settings(**settings), ServeOptions(port=8080), False, None)
