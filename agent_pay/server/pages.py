"""What the content server's pages say: an article's summary, its free preview (the 402), its
whole text (the 200), as JSON with the headers a browser-side client may read.

The pages every reader gets alike are encoded once and kept: the first 402 of each article
and the paid page of a read charged inline (a channel voucher), whose fixed headers are
encoded once too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from agent_pay.assets import AssetRegistry
from agent_pay.errors import AgentPayError, Reason
from agent_pay.protocol import PaymentRequirements
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    encode_header,
)
from agent_pay.protocol.extensions import RECEIPT_HEADER
from agent_pay.server.catalogue import Article
from agent_pay.server.declarations import Declarations
from agent_pay.server.paywall import Paywall

__all__ = ["EXPOSED", "Pages"]

EXPOSED = ", ".join([PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER, RECEIPT_HEADER])
"""The response headers a browser-side client may read (`Access-Control-Expose-Headers`)."""

_PAID_PAGES = 256  # encoded paid pages kept for inline-charged reads
_PAY_TO_READ = "pay to read the rest of this article"


class Pages:
    """Renders the catalogue's articles as the server answers them."""

    def __init__(self, assets: AssetRegistry, paywall: Paywall, declarations: Declarations) -> None:
        self.assets = assets
        self.paywall = paywall
        self.declarations = declarations
        self._previews: dict[str, tuple[Article, bytes]] = {}  # one per catalogue article
        self._paid: dict[tuple[str, str], bytes] = {}

    def summary(self, article: Article) -> dict[str, Any]:
        """What the catalogue lists of `article`: its metadata and its prices in every token."""
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
                    "schemes": list(self.paywall.schemes),
                }
                for symbol in sorted(article.prices)
                for asset in [self.assets.by_symbol(symbol)]
            ],
        }

    def page(self, article: Article, content: str, complete: bool) -> dict[str, Any]:
        return {**self.summary(article), "content": content, "complete": complete}

    def refusal(
        self,
        article: Article,
        request: Request,
        offers: Sequence[PaymentRequirements],
        exc: AgentPayError | None = None,
    ) -> Response:
        """The 402: the preview, the offers, and why a payment was refused (`exc`) if one was."""
        extensions = self.declarations.for_402(str(request.url), offers)
        extensions.update(getattr(exc, "extensions", None) or {})  # a scheme's own (channel)
        required = self.paywall.payment_required(
            article, str(request.url), offers, exc.reason if exc else None, extensions=extensions
        )
        headers = {
            PAYMENT_REQUIRED_HEADER: encode_header(required),
            "Access-Control-Expose-Headers": EXPOSED,
            "Cache-Control": "no-store",
        }
        if exc is None:  # the first 402 of every paid read: the same body for every reader
            return Response(self._preview(article), 402, headers, media_type="application/json")
        return JSONResponse(self._preview_body(article, exc.reason, exc.message), 402, headers)

    def whole(self, article: Article, content: str, headers: Mapping[str, str]) -> Response:
        """The 200 of a read paid or proven: one payer's, never cached; `headers` add to or
        replace the defaults."""
        defaults = {"Access-Control-Expose-Headers": EXPOSED, "Cache-Control": "private, no-store"}
        return JSONResponse(
            self.page(article, content, complete=True), 200, {**defaults, **headers}
        )

    def charged_inline(self, article: Article, content: str, payment_response: str) -> Response:
        """The 200 of a read charged inline: the same page for every reader, encoded once per
        (article, content)."""
        key = (article.slug, content)
        body = self._paid.get(key)
        if body is None:
            if len(self._paid) >= _PAID_PAGES:
                self._paid.clear()
            page = self.page(article, content, complete=True)
            body = self._paid[key] = bytes(JSONResponse(page).body)
        return _InlinePaidPage(body, payment_response)

    def _preview_body(self, article: Article, error: str, message: str) -> dict[str, Any]:
        body = self.page(article, article.preview, complete=False)
        body["error"] = error
        body["message"] = message
        return body

    def _preview(self, article: Article) -> bytes:
        """The encoded 402 body when no payment was refused, kept per article."""
        kept = self._previews.get(article.slug)
        if kept is None or kept[0] is not article:
            body = self._preview_body(article, Reason.PAYMENT_REQUIRED, _PAY_TO_READ)
            kept = self._previews[article.slug] = (article, bytes(JSONResponse(body).body))
        return kept[1]


class _InlinePaidPage(Response):
    """The 200 of a read charged inline, its fixed headers encoded once (Starlette encodes a
    response's header dict afresh each time: about 1 µs of every voucher read)."""

    media_type = "application/json"
    _FIXED: Final = [
        (b"access-control-expose-headers", EXPOSED.encode("latin-1")),
        (b"cache-control", b"private, no-store"),
        (b"content-type", b"application/json"),
    ]

    def __init__(self, body: bytes, payment_response: str) -> None:
        self._payment_response = payment_response
        super().__init__(body, 200)

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        self.raw_headers = [
            (b"payment-response", self._payment_response.encode("latin-1")),
            *self._FIXED,
            (b"content-length", str(len(self.body)).encode("latin-1")),
        ]
