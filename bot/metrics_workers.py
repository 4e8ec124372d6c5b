"""One operations endpoint for all the workers of ``voicebot serve --workers N``.

Each worker keeps its own registry and its own operations listener (``bot.ops``, on the ops
port + 1 + its index); worker 0 also serves this aggregate on the ops port itself, which is what
Prometheus scrapes and an operator reads:

* ``GET /metrics``: every worker's ``/metrics``, fetched over loopback at scrape time, each
  sample given a ``worker`` label (``"0"`` … ``"N-1"``), plus ``voicebot_worker_up{worker}``
  (1 when the worker answered). Dashboards and the HPA sum over ``worker`` (the Grafana
  queries already ``sum`` by persona, reason…).
* ``GET /stats``: ``{"calls": <sum>, "workers": {"0": <that worker's /stats>, …}}``.
* ``/livez``, ``/readyz``, ``/healthz``: worker 0's own.

Why labels rather than prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``):
that mode replaces every metric's value with a memory-mapped file chosen at import time, so the
app-owned registries (several servers in one test process) and the scrape-time collectors
(``bot.metrics_process``: loop lag, GC pauses, bridge latency from ``bot.stats``; call records)
would not be aggregated at all; its gauges need a mode per metric, and a restarted worker's
counters would be summed into the others' (a sum that goes down is read as a reset). One series
per worker keeps every metric, and a restarted worker is one series' reset, which ``rate()``
handles. The cost is a scrape that reads N small pages over loopback.

The bearer token (``VOICEBOT_OPS_TOKEN``) is required here as on every ops listener, and sent
on to the workers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from loguru import logger
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from bot.app_keys import CALLS
from bot.health import add_health_routes
from bot.listen_address import ListenAddress, OpsExposureError, is_loopback_host
from bot.ops import OPS_AUTH, OpsAuth, require_token
from bot.settings import Settings

FETCH_TIMEOUT_SECS = 5.0
WORKER_LABEL = "worker"


def merge_metrics(pages: Sequence[str | None]) -> list[Metric]:
    """Worker pages (Prometheus text; None: no answer) as one set of families, labelled.

    Raises:
        ValueError: a page is not Prometheus' text format.
    """
    merged: dict[str, Metric] = {}
    up = GaugeMetricFamily(
        "voicebot_worker_up", "1 when the worker answered this scrape.", labels=[WORKER_LABEL]
    )
    for index, page in enumerate(pages):
        up.add_metric([str(index)], 0.0 if page is None else 1.0)
        if page is None:
            continue
        for family in text_string_to_metric_families(page):
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for s in family.samples:
                labels = {WORKER_LABEL: str(index), **s.labels}
                into.samples.append(Sample(s.name, labels, s.value, s.timestamp, s.exemplar))
    return [*merged.values(), up]


def merge_stats(pages: Sequence[dict[str, Any] | str]) -> dict[str, Any]:
    """Worker ``/stats`` (a dict, or why it did not answer) as one: totals and per worker."""
    calls = sum(int(p.get("calls", 0)) for p in pages if isinstance(p, dict))
    return {
        "calls": calls,
        "workers_up": sum(isinstance(p, dict) for p in pages),
        "workers": {
            str(i): (p if isinstance(p, dict) else {"error": p}) for i, p in enumerate(pages)
        },
    }


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class AggregateOps:
    """The aggregate operations listener of worker 0 (``start()`` / ``stop()``).

    Args:
        public: Worker 0's public Application (its health).
        settings: The process settings (the ops token).
        address: Where to bind (the ops port).
        workers: Every worker's own ops listener, in index order.
    """

    def __init__(
        self,
        public: web.Application,
        settings: Settings,
        address: ListenAddress,
        workers: Sequence[ListenAddress],
    ) -> None:
        token = settings.ops_token.get_secret_value() if settings.ops_token else None
        if token is None and not is_loopback_host(address.host):
            raise OpsExposureError(
                f"the aggregate operations listener binds {address.host} without "
                "VOICEBOT_OPS_TOKEN; set it, or bind 127.0.0.1"
            )
        self._token = token
        self._address = address
        self._workers = [
            ListenAddress("127.0.0.1" if not is_loopback_host(w.host) else w.host, w.port)
            for w in workers
        ]
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""
        app = web.Application(middlewares=[require_token])
        app[OPS_AUTH] = OpsAuth(token)
        app[CALLS] = public[CALLS]
        add_health_routes(app)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/stats", self._stats)
        self.app = app

    async def start(self) -> str:
        """Bind and serve; the base URL.

        Raises:
            OSError: the address cannot be bound.
        """
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECS)
        )
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self._address.host, self._address.port).start()
        except OSError:
            await runner.cleanup()
            await self._session.close()
            raise
        self._runner = runner
        self.url = self._address.url()
        return self.url

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _fetch(self, path: str) -> list[str | None]:
        assert self._session is not None
        session = self._session

        async def one(address: ListenAddress) -> str | None:
            try:
                async with session.get(f"{address.url()}{path}") as r:
                    if r.status == 200:
                        return await r.text()
                    logger.warning(f"ops aggregate: {address.url()}{path} answered {r.status}")
            except (aiohttp.ClientError, TimeoutError) as e:
                logger.warning(f"ops aggregate: {address.url()}{path} did not answer: {e!r}")
            return None

        return list(await asyncio.gather(*(one(a) for a in self._workers)))

    async def _metrics(self, request: web.Request) -> web.Response:
        pages = await self._fetch("/metrics")
        # Parsing N pages is a few ms of CPU: off the loop that carries worker 0's calls.
        families = await asyncio.to_thread(merge_metrics, pages)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(families))
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = await asyncio.to_thread(encoder, registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _stats(self, request: web.Request) -> web.Response:
        pages = await self._fetch("/stats")
        parsed: list[dict[str, Any] | str] = []
        for page in pages:
            try:
                parsed.append(json.loads(page) if page is not None else "no answer")
            except ValueError:
                parsed.append("not JSON")
        return web.json_response(merge_stats(parsed))
