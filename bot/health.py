"""Health endpoints: ``/livez`` (liveness), ``/readyz`` and ``/healthz`` (readiness).

A draining process is alive but not ready: it must keep serving the calls it holds until they
end, so an orchestrator must not restart it (liveness stays 200) but must send it no new
callers (readiness 503). Kubernetes probes ``/livez`` and ``/readyz``
(``deploy/k8s/deployment.yaml``); ``/healthz`` is kept with its former meaning, readiness.

Readiness does not fail when the Gemini session quota is reached: the quota is shared by every
process on the key, so failing readiness would take them all out of service together; the
webhook answers the busy TwiML instead (``bot.session_quota``).
"""

from __future__ import annotations

from aiohttp import web

from bot.app_keys import CALLS


async def livez(request: web.Request) -> web.Response:
    """Liveness: 200 while the event loop answers, draining or not."""
    calls = request.app[CALLS]
    return web.json_response({"status": "alive", "calls": len(calls)})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 while admitting calls, 503 while draining."""
    calls = request.app[CALLS]
    body: dict[str, object] = {
        "status": "ok" if calls.accepting else "draining",
        "calls": len(calls),
        **calls.quota.describe(),
    }
    return web.json_response(body, status=200 if calls.accepting else 503)


def add_health_routes(app: web.Application) -> None:
    """Register ``/livez``, ``/readyz`` and ``/healthz`` (an alias of ``/readyz``)."""
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/healthz", readyz)
