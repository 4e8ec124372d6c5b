"""A Live API ``usageMetadata`` as token counts by kind and modality, for the metrics port.

Each ``turnComplete`` carries the usage of that turn (the Live API bills every turn for the
whole context it read), so counts are added up per message, never taken as running totals.
The usage-only messages 3.x models send mid-reply are snapshots of the turn in progress and
are not counted (``replies.Replies`` reads usage where Pipecat does: with ``turnComplete``).

Kinds: ``prompt`` (what the model read: audio, text), ``response`` (what it said),
``thoughts`` (thinking tokens, billed as output), ``tool_prompt`` (tool results it read).
Modalities are the API's in lower case (``audio``, ``text``, ...); a count without a
per-modality breakdown is ``unspecified`` (thoughts are ``text``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

KINDS = ("prompt", "response", "thoughts", "tool_prompt")
MODALITIES = ("audio", "text", "image", "video", "document", "unspecified")


def _modality(entry: Any) -> str:
    raw = getattr(entry.modality, "value", entry.modality)
    name = str(raw or "").lower()
    return name if name in MODALITIES else "unspecified"


def _split(total: int | None, details: list[Any] | None) -> Iterator[tuple[str, int]]:
    """``total`` by modality: the details, and what they leave unexplained."""
    if not total:
        return
    explained = 0
    for entry in details or ():
        count = entry.token_count or 0
        if count > 0:
            explained += count
            yield _modality(entry), count
    if total > explained:
        yield "unspecified", total - explained


def token_counts(usage: Any) -> Iterator[tuple[str, str, int]]:
    """``(kind, modality, tokens)`` of one ``usageMetadata``; zero counts are left out."""
    yield from (("prompt", m, n) for m, n in _split(usage.prompt_token_count,
                                                   usage.prompt_tokens_details))  # fmt: skip
    yield from (("response", m, n) for m, n in _split(usage.response_token_count,
                                                     usage.response_tokens_details))  # fmt: skip
    if usage.thoughts_token_count:
        yield "thoughts", "text", usage.thoughts_token_count
    yield from (
        ("tool_prompt", m, n)
        for m, n in _split(usage.tool_use_prompt_token_count, usage.tool_use_prompt_tokens_details)
    )
