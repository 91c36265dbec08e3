"""How much load `agent-pay bench` puts on each phase: `BenchConfig`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["DEFAULT_SLUG", "BenchConfig"]

DEFAULT_SLUG = "why-micropayments-failed"


@dataclass(frozen=True)
class BenchConfig:
    """How much load each phase gets. Every phase is bounded by its count and `phase_seconds`."""

    schemes: tuple[str, ...] = ("exact",)
    # The server's embedded chain: "process" (its own), "embedded" (the server's), or "both"
    # (its own, then the paid exact phases again on a second server with it in the server's).
    chain: str = "both"
    free_requests: int = 20_000
    paid_requests: int = 2_000
    unloaded_requests: int = 200
    warmup_requests: int = 500
    concurrency: int = 16
    agents: int = 100
    phase_seconds: float = 60.0
    mining_batch: int = 400  # a block holds at most 500 (60M gas / 120k per settlement)
    mining_singles: int = 100
    stock: bool = True
    stock_requests: int = 1_000
    reads_per_channel: int = 1_000  # the channel target is stated at 1,000 reads per channel
    slug: str = DEFAULT_SLUG
    quick: bool = False

    @classmethod
    def quick_run(cls, **overrides: Any) -> BenchConfig:
        """Small counts: the whole run finishes in well under a minute."""
        quick = cls(
            free_requests=3_000,
            paid_requests=300,
            unloaded_requests=30,
            warmup_requests=200,
            agents=30,
            phase_seconds=10.0,
            mining_batch=200,
            mining_singles=30,
            stock_requests=150,
            reads_per_channel=300,
            quick=True,
        )
        return replace(quick, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "schemes": list(self.schemes)}
