"""The content server: free previews, HTTP 402 for the rest, the whole article once paid.

    GET /articles            the catalogue: slugs, titles, authors, prices
    GET /articles/{slug}     402 + first third + PAYMENT-REQUIRED, or 200 + whole + PAYMENT-RESPONSE

The server never touches the chain; it asks its `Facilitator`. A read is charged only after its
content was produced, and the content is released only after settlement succeeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from agent_pay.assets import AssetRegistry
from agent_pay.errors import (
    AgentPayError,
    ChainUnavailableError,
    MalformedPaymentError,
    PaymentRejectedError,
    Reason,
    SettlementFailedError,
)
from agent_pay.facilitator.base import Facilitator
from agent_pay.protocol import PaymentPayload, PaymentRequirements
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    encode_header,
)
from agent_pay.server.catalogue import Article, Catalogue
from agent_pay.server.offers import OfferBuilder
from agent_pay.server.paywall import PaymentHeader, Paywall

__all__ = ["Renderer", "create_app", "render_article"]

Renderer = Callable[[Article], str]
"""Produces the full text of a paid article. If it raises, the read is not charged."""

_EXPOSED = ", ".join([PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER])


def render_article(article: Article) -> str:
    return article.body


def _error(exc: AgentPayError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": exc.reason, "message": exc.message}, exc.status_code, headers)


def create_app(
    catalogue: Catalogue,
    assets: AssetRegistry,
    facilitator: Facilitator,
    *,
    render: Renderer = render_article,
    schemes: Sequence[OfferBuilder] | None = None,
) -> FastAPI:
    """Build the ASGI app selling `catalogue`, priced in `assets`, settled by `facilitator`.

    `schemes` are the payment schemes offered, in order of the server's preference; by
    default only "exact".
    """
    catalogue.check_tokens({asset.symbol: asset.decimals for asset in assets})
    paywall = Paywall(assets, facilitator, schemes)
    payment_header = PaymentHeader(auto_error=False, schemes=paywall.schemes)
    app = FastAPI(title="agent-pay content server", docs_url=None, redoc_url=None)
    app.state.paywall = paywall
    app.state.catalogue = catalogue

    def summary(article: Article) -> dict[str, Any]:
        return {
            "slug": article.slug,
            "title": article.title,
            "author": article.author,
            "authorName": article.author_name,
            "summary": article.summary,
            "tags": list(article.tags),
            "prices": [
                {
                    "token": symbol,
                    "price": str(article.prices[symbol]),
                    "amount": str(article.price_atomic(symbol, asset.decimals)),
                    "asset": asset.address,
                    "network": asset.network,
                    "schemes": list(paywall.schemes),
                }
                for symbol in sorted(article.prices)
                for asset in [assets.by_symbol(symbol)]
            ],
        }

    def page(article: Article, content: str, complete: bool) -> dict[str, Any]:
        return {**summary(article), "content": content, "complete": complete}

    def refuse(
        article: Article,
        url: str,
        offers: Sequence[PaymentRequirements],
        exc: AgentPayError | None = None,
    ) -> JSONResponse:
        required = paywall.payment_required(article, url, offers, exc.reason if exc else None)
        body = page(article, article.preview, complete=False)
        body["error"] = exc.reason if exc else Reason.PAYMENT_REQUIRED
        body["message"] = exc.message if exc else "pay to read the rest of this article"
        headers = {
            PAYMENT_REQUIRED_HEADER: encode_header(required),
            "Access-Control-Expose-Headers": _EXPOSED,
            "Cache-Control": "no-store",
        }
        return JSONResponse(body, 402, headers)

    @app.exception_handler(MalformedPaymentError)
    async def malformed(_: Request, exc: MalformedPaymentError) -> Response:
        return _error(exc)

    @app.exception_handler(ChainUnavailableError)
    async def unavailable(_: Request, exc: ChainUnavailableError) -> Response:
        return _error(exc, {"Retry-After": str(exc.retry_after)})

    @app.get("/")
    async def index() -> dict[str, Any]:
        return {"service": "agent-pay", "articles": "/articles", "x402Version": 2}

    @app.get("/articles")
    async def list_articles() -> dict[str, Any]:
        return {"articles": [summary(a) for a in catalogue]}

    @app.get("/articles/{slug}")
    async def read_article(
        slug: str,
        request: Request,
        # A default rather than Annotated: `payment_header` is local, which string
        # annotations (this module uses `from __future__ import annotations`) cannot see.
        payment: PaymentPayload | None = Depends(payment_header),
    ) -> Response:
        article = catalogue.get(slug)
        if article is None:
            return _error(_NotFound(f"no article {slug!r}"))
        offers = paywall.offers(article)
        url = str(request.url)
        if payment is None:
            return refuse(article, url, offers)
        timer = _Timer()
        try:
            with timer("verify"):
                charge = await paywall.verify(payment, offers, request.url.path)
        except PaymentRejectedError as exc:
            return refuse(article, url, offers, exc)
        try:
            with timer("render"):
                content = render(article)
        except Exception:
            # Verified but not settled: nothing was charged. The client may retry.
            problem = ChainUnavailableError(
                "the article could not be produced; nothing was charged",
                Reason.CONTENT_UNAVAILABLE,
                retry_after=1,
            )
            return _error(problem, {"Retry-After": str(problem.retry_after)})
        try:
            with timer("settle"):
                settled = await charge.settle()
        except SettlementFailedError as exc:
            return refuse(article, url, offers, exc)
        headers = {
            PAYMENT_RESPONSE_HEADER: encode_header(settled),
            "Access-Control-Expose-Headers": _EXPOSED + ", Server-Timing",
            "Cache-Control": "private, no-store",
            "Server-Timing": timer.header(),
        }
        return JSONResponse(page(article, content, complete=True), 200, headers)

    return app


class _Timer:
    """Collects step durations for the `Server-Timing` header (what the demo prints)."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.steps.append((name, (time.perf_counter() - start) * 1000))

    def header(self) -> str:
        return ", ".join(f"{name};dur={ms:.2f}" for name, ms in self.steps)


class _NotFound(AgentPayError):
    status_code = 404
    default_reason = Reason.NOT_FOUND
