"""A reading agent's client for agent-pay content servers, and pluggable rules for what to buy.

`Reader` wraps an `httpx.Client` with a `PaymentAuth`: `articles()` lists the catalogue,
`preview(slug)` reads the free part (never pays), `buy(slug)` pays and reads the whole.
A `BuyRule` decides from the free part whether an article is worth its price; `InterestRule`
is the transparent one the demo uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import httpx

from agent_pay.client.auth import PaymentAuth
from agent_pay.errors import PaymentRejectedError, Reason
from agent_pay.protocol import PaymentRequired, SettleResponse
from agent_pay.protocol.codec import PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER, decode_header

__all__ = ["BuyRule", "InterestRule", "Page", "Reader", "Verdict"]


@dataclass(frozen=True, slots=True)
class Page:
    """One answer of the content server for an article."""

    status: int
    body: dict[str, Any]
    elapsed: float  # seconds, wall clock, client side
    challenge: PaymentRequired | None = None  # the PAYMENT-REQUIRED of a 402
    settlement: SettleResponse | None = None  # the PAYMENT-RESPONSE of a paid 200
    server_timing: dict[str, float] = field(default_factory=dict)  # step -> milliseconds

    @property
    def complete(self) -> bool:
        return bool(self.body.get("complete"))

    @property
    def content(self) -> str:
        return str(self.body.get("content", ""))

    @property
    def error(self) -> str | None:
        error = self.body.get("error")
        return str(error) if error else None


@dataclass(frozen=True, slots=True)
class Verdict:
    buy: bool
    why: str


class BuyRule(Protocol):
    """Decides from an article's listing entry and its free preview whether to buy it."""

    def __call__(self, article: dict[str, Any], preview: str) -> Verdict: ...


@dataclass(frozen=True)
class InterestRule:
    """Buy when the article touches one of `interests` (tags or title words) and costs at most
    `max_price` in some token the agent holds."""

    interests: frozenset[str]
    max_price: Decimal
    tokens: frozenset[str]

    @classmethod
    def of(cls, interests: Iterable[str], max_price: str, tokens: Iterable[str]) -> InterestRule:
        return cls(frozenset(i.lower() for i in interests), Decimal(max_price), frozenset(tokens))

    def __call__(self, article: dict[str, Any], preview: str) -> Verdict:
        words = {t.lower() for t in article.get("tags", [])}
        words |= {w.strip(".,:;!?\"'()").lower() for w in str(article.get("title", "")).split()}
        hits = sorted(self.interests & words)
        if not hits:
            return Verdict(
                False, f"no interest matches (looking for {', '.join(sorted(self.interests))})"
            )
        prices = [p for p in article.get("prices", []) if p.get("token") in self.tokens]
        if not prices:
            return Verdict(False, "priced only in tokens this agent does not hold")
        cheapest = min(prices, key=lambda p: Decimal(p["price"]))
        if Decimal(cheapest["price"]) > self.max_price:
            return Verdict(
                False, f"{cheapest['price']} {cheapest['token']} is over the {self.max_price} cap"
            )
        return Verdict(
            True,
            f"about {', '.join(hits)}; {cheapest['price']} {cheapest['token']} is within budget",
        )


class Reader:
    """Reads (and buys) articles from one content server."""

    def __init__(
        self,
        base_url: str,
        auth: PaymentAuth | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        retries: int = 2,
        max_retry_wait: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.auth = auth
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self._sleep = sleep
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def articles(self) -> list[dict[str, Any]]:
        """The catalogue: slug, title, author, tags and prices of every article."""
        response = self._http.get("/articles")
        response.raise_for_status()
        return list(response.json()["articles"])

    def preview(self, slug: str) -> Page:
        """The free part of an article. Never pays."""
        return self._get(slug, auth=None)

    def buy(self, slug: str) -> Page:
        """The whole article, paying if the server asks (within the auth's policy), or reading
        it again for free if this agent bought it before (the auth keeps the receipts).

        A 503 or a lost connection is retried `retries` times, after the server's Retry-After
        (at most `max_retry_wait` seconds): the auth sends the same payment again, which the
        server charges at most once.

        Raises PolicyViolationError / NoAcceptableOfferError before signing anything when the
        price is not payable, and PaymentRejectedError when the server refused the payment.
        """
        if self.auth is None:
            raise ValueError("this Reader has no PaymentAuth: it cannot pay")
        for attempt in range(self.retries + 1):
            try:
                page = self._get(slug, auth=self.auth)
                break
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 503 or attempt == self.retries:
                    raise
                self._sleep(self._retry_after(exc.response))
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
                self._sleep(1.0)
        if page.status == 402:
            reason = page.error or Reason.PAYMENT_REFUSED
            raise PaymentRejectedError(
                f"the server refused the payment: {page.body.get('message', reason)}",
                _as_reason(reason),
            )
        return page

    def _retry_after(self, response: httpx.Response) -> float:
        try:
            wait = float(response.headers.get("retry-after", "1"))
        except ValueError:
            wait = 1.0
        return min(max(wait, 0.0), self.max_retry_wait)

    def _get(self, slug: str, auth: PaymentAuth | None) -> Page:
        start = time.perf_counter()
        response = self._http.get(f"/articles/{slug}", auth=auth or httpx.USE_CLIENT_DEFAULT)
        elapsed = time.perf_counter() - start
        if response.status_code not in (200, 402):
            response.raise_for_status()
        challenge = settlement = None
        if PAYMENT_REQUIRED_HEADER in response.headers:
            challenge = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
        if PAYMENT_RESPONSE_HEADER in response.headers:
            settlement = decode_header(response.headers[PAYMENT_RESPONSE_HEADER], SettleResponse)
        return Page(
            response.status_code,
            response.json(),
            elapsed,
            challenge,
            settlement,
            _server_timing(response.headers.get("server-timing", "")),
        )


def _server_timing(header: str) -> dict[str, float]:
    steps: dict[str, float] = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            try:
                steps[name] = float(rest[4:])
            except ValueError:
                continue
    return steps


def _as_reason(code: str) -> Reason:
    try:
        return Reason(code)
    except ValueError:
        return Reason.PAYMENT_REFUSED
