"""The emulator's REST side: ``models.list`` / ``models.get`` and Google's error bodies.

The server checks ``GEMINI_API_KEY`` at start with ``GET /{version}/models?pageSize=1``
(``bot.gemini_key``); the emulator answers it as Google does, with the Live socket's key rules:
no key is 403 ``PERMISSION_DENIED``, a key other than ``--api-key`` is 400
``INVALID_ARGUMENT`` with an ``ErrorInfo`` of reason ``API_KEY_INVALID`` (the body Google
sends, as quoted in public bug reports, e.g. google/timesketch PR #3703).
"""

from __future__ import annotations

from typing import Any

from pipelines.gemini_models import MODELS

_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}
_SERVICE = "generativelanguage.googleapis.com"


def error_body(code: int, message: str) -> dict[str, Any]:
    """Google's JSON error envelope (``{"error": {code, message, status, details}}``)."""
    error: dict[str, Any] = {"code": code, "message": message, "status": _STATUS[code]}
    if "API key not valid" in message:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": _SERVICE},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": message,
            },
        ]
    return {"error": error}


def model_resource(name: str) -> dict[str, Any] | None:
    """One Live model as the REST API describes it, or None if the emulator has no such model."""
    spec = MODELS.get(name.removeprefix("models/"))
    if spec is None:
        return None
    return {
        "name": f"models/{spec.name}",
        "version": "001",
        "displayName": spec.name,
        "description": f"Live API model ({spec.status}), emulated",
        "inputTokenLimit": 131072,
        "outputTokenLimit": 8192,
        "supportedGenerationMethods": ["bidiGenerateContent", "countTokens"],
    }


def models_page(page_size: str | None) -> dict[str, Any]:
    """The first page of ``models.list`` (``pageSize`` models; a next-page token if more)."""
    models = [m for m in (model_resource(n) for n in MODELS) if m is not None]
    size = int(page_size) if page_size and page_size.isdigit() and int(page_size) > 0 else 50
    body: dict[str, Any] = {"models": models[:size]}
    if len(models) > size:
        body["nextPageToken"] = f"page-{size}"
    return body
