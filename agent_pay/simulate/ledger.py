"""The record of a simulation: one `Visit` per article an agent opened."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["OUTCOMES", "Ledger", "Visit"]

OUTCOMES = ("paid", "reread", "declined", "over_cap", "over_budget", "no_token", "error")
"""paid: bought and read; reread: read in full again without paying (the server honoured the
agent's receipt); declined: read the preview, off its topics; over_cap / over_budget:
the spending policy refused before anything was signed; no_token: priced only in tokens the
agent does not hold; error: anything else (a failed run)."""


@dataclass(frozen=True, slots=True)
class Visit:
    day: int
    agent: int
    slug: str
    outcome: str
    scheme: str  # the scheme paid with ("" when nothing was paid)
    asset: str  # the token paid with ("" when nothing was paid)
    amount: int  # atomic units paid
    transaction: str  # settlement transaction hash ("" when none)
    latency: float  # wall-clock seconds, client side: 402 + decide + sign + paid request
    verify_ms: float | None  # the server's Server-Timing, when paid
    settle_ms: float | None
    detail: str = ""


@dataclass
class Ledger:
    visits: list[Visit] = field(default_factory=list)

    def add(self, visit: Visit) -> None:
        self.visits.append(visit)

    def count(self, outcome: str) -> int:
        return sum(1 for v in self.visits if v.outcome == outcome)

    def paid(self) -> list[Visit]:
        return [v for v in self.visits if v.outcome == "paid"]
