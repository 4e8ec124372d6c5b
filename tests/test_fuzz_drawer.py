"""The fuzzer's drawing process: batches cross to the server's side, failures are still shrunk."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sim.fuzz.drawer import Drawer
from sim.fuzz.strategies import WebhookRequest

pytestmark = pytest.mark.unit


async def test_batches_are_drawn_until_enough_inputs_were_tried() -> None:
    seen: list[tuple[str, int]] = []

    async def run_batch(kind: str, batch: list[Any]) -> list[str]:
        seen.append((kind, len(batch)))
        return []

    async with Drawer(min_inputs=400, fuzz_seed=13) as drawer:
        failure = await drawer.serve(run_batch, lambda: sum(n for _, n in seen))

    assert failure is None
    assert sum(n for _, n in seen) >= 400
    assert {kind for kind, _ in seen} == {"before_start", "on_call", "webhook"}


async def _serve_failing(min_inputs: int, fails: Callable[[str, list[Any]], bool]):
    """Serve a drawer whose batches fail where ``fails`` says; its failure and inputs tried."""
    tried = 0

    async def run_batch(kind: str, batch: list[Any]) -> list[str]:
        nonlocal tried
        tried += len(batch)
        return ["HTTP 500 on /twilio/voice"] if fails(kind, batch) else []

    async with Drawer(min_inputs=min_inputs, fuzz_seed=13) as drawer:
        failure = await drawer.serve(run_batch, lambda: tried)
    return failure, tried


async def test_a_failing_batch_is_shrunk_to_a_minimal_one() -> None:
    def fails(kind: str, batch: list[Any]) -> bool:
        return kind == "webhook" and len(batch) >= 2 and isinstance(batch[0], WebhookRequest)

    failure, tried = await _serve_failing(5_000, fails)

    assert failure is not None
    assert failure.startswith("HTTP 500 on /twilio/voice\n  minimal batch:")
    # Shrunk: two requests, each the simplest Hypothesis can make.
    assert failure.count("WebhookRequest(") == 2, failure
    assert tried < 5_000


async def test_a_drawing_process_that_dies_is_a_problem_not_a_hang() -> None:
    async def run_batch(kind: str, batch: list[Any]) -> list[str]:
        return []  # a batch it sent before it died is still read (and its answer lost)

    async with Drawer(min_inputs=100, fuzz_seed=13) as drawer:
        assert drawer._proc is not None
        drawer._proc.kill()
        failure = await drawer.serve(run_batch, lambda: 0)

    assert failure is not None
    assert failure.startswith("the drawing process died (exit code -9")


async def test_a_batch_that_passes_when_run_again_is_reported_as_flaky() -> None:
    failed: list[str] = []

    def fails(kind: str, batch: list[Any]) -> bool:  # the first webhook batch only
        if kind != "webhook" or failed:
            return False
        failed.append(kind)
        return True

    failure, _ = await _serve_failing(2_000, fails)

    assert failure is not None
    assert failure.startswith("HTTP 500 on /twilio/voice (flaky: it passed when run again)")
    assert "WebhookRequest(" in failure
