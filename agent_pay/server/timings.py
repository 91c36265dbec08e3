"""Per-request step timings: what each step of a paid read cost, for the Server-Timing header."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["request_timings", "server_timing", "timed"]

_STEPS = ("verify", "render", "settle")

# Step durations (ms) of the request being served, for its Server-Timing header.
request_timings: ContextVar[dict[str, float] | None] = ContextVar("agent_pay_timings", default=None)


@contextmanager
def timed(step: str) -> Iterator[None]:
    """Add the block's duration (ms) to `step` in the current request's timings, if any."""
    timings = request_timings.get()
    if timings is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = (time.perf_counter() - start) * 1000
        timings[step] = timings.get(step, 0.0) + elapsed


def server_timing(timings: dict[str, float]) -> str:
    """The `Server-Timing` value: the steps of a paid read that did them, in order. (The
    ledger's own time, also in `timings`, is left out: the demo prints these three, and the
    benchmark measures it.)"""
    return ", ".join(f"{step};dur={timings[step]:.2f}" for step in _STEPS if step in timings)
