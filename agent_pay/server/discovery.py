"""What the server sells, for machines: `GET /.well-known/x402` and `GET /llms.txt`.

`/.well-known/x402` lists every article as x402's discovery API (the Bazaar's
`GET /discovery/resources`) lists a resource: `{resource, type: "http", x402Version, accepts,
lastUpdated, metadata}` in `items`, with `pagination`; beside them, what a client needs to
trust and use the server: the receipt signer, the networks, schemes and extensions, and the
headers of re-reads. `/llms.txt` says the same in plain text for an LLM agent: what is sold,
at what price, how to pay and how to read again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from agent_pay.assets import AssetRegistry
from agent_pay.protocol import PaymentRequirements
from agent_pay.protocol.codec import PAYMENT_REQUIRED_HEADER, PAYMENT_SIGNATURE_HEADER
from agent_pay.protocol.extensions import (
    ENTITLEMENT_EXTENSION,
    ENTITLEMENT_HEADER,
    RECEIPT_EXTENSION,
)
from agent_pay.protocol.offer_receipt import OFFER_RECEIPT
from agent_pay.protocol.payment_identifier import PAYMENT_IDENTIFIER
from agent_pay.protocol.siwx import SIGN_IN_WITH_X, SIWX_HEADER
from agent_pay.server.catalogue import Article, Catalogue
from agent_pay.server.paywall import Paywall

__all__ = ["EXTENSIONS", "discovery_router", "llms_txt", "x402_discovery"]

EXTENSIONS = (
    SIGN_IN_WITH_X,
    PAYMENT_IDENTIFIER,
    OFFER_RECEIPT,
    ENTITLEMENT_EXTENSION,
    RECEIPT_EXTENSION,
)
"""The extensions this server speaks: x402's standard ones, then agent-pay's."""

Priced = tuple[Article, list[PaymentRequirements]]


def x402_discovery(
    base_url: str,
    articles: Iterable[Priced],
    *,
    receipt_signer: str,
    networks: list[str],
    schemes: list[str],
    updated: float | None = None,
) -> dict[str, Any]:
    """The `/.well-known/x402` document for the server at `base_url` (no trailing slash)."""
    last_updated = int(updated if updated is not None else time.time())
    items = [
        {
            "resource": f"{base_url}/articles/{article.slug}",
            "type": "http",
            "x402Version": 2,
            "accepts": [offer.to_wire() for offer in offers],
            "lastUpdated": last_updated,
            "metadata": {
                "title": article.title,
                "description": article.summary or "",
                "author": article.author,
                "authorName": article.author_name or "",
                "tags": list(article.tags),
                "mimeType": "application/json",
                "prices": {symbol: str(price) for symbol, price in article.prices.items()},
            },
        }
        for article, offers in articles
    ]
    return {
        "x402Version": 2,
        "items": items,
        "pagination": {"limit": len(items), "offset": 0, "total": len(items)},
        "networks": networks,
        "schemes": schemes,
        "extensions": list(EXTENSIONS),
        "receiptSigner": receipt_signer,
        "headers": {
            "paymentRequired": PAYMENT_REQUIRED_HEADER,
            "paymentSignature": PAYMENT_SIGNATURE_HEADER,
            "signInWithX": SIWX_HEADER,
            "entitlement": ENTITLEMENT_HEADER,
        },
        "links": {"agentPay": f"{base_url}/.well-known/agent-pay", "llms": f"{base_url}/llms.txt"},
    }


def llms_txt(base_url: str, articles: Iterable[Priced], assets: AssetRegistry) -> str:
    """The `/llms.txt` guide for the server at `base_url` (no trailing slash)."""
    lines = [
        "# agent-pay content server",
        "",
        "> Articles sold per read over HTTP 402 (x402 version 2). The first third of every",
        "> article is free; the rest costs a few cents of a stablecoin, paid by signing an",
        "> EIP-3009 transferWithAuthorization. No account, no API key: a key that signs.",
        "",
        "## How to read",
        "",
        f"1. GET {base_url}/articles/{{slug}}. Without payment: HTTP 402, the free third in",
        "   the JSON body, and the offers in the PAYMENT-REQUIRED header (base64 JSON:",
        "   accepts = scheme, network, amount in atomic units, asset, payTo).",
        "2. Sign one offer with an x402 v2 client (any stock x402 client works; the Python",
        "   reference is agent_pay.PaymentAuth) and send the same GET with PAYMENT-SIGNATURE.",
        "3. HTTP 200: the whole article; PAYMENT-RESPONSE holds the transaction and signed",
        "   receipts (agent-pay/receipt, and x402 offer-receipt).",
        "4. Read it again for free: answer a later 402 with SIGN-IN-WITH-X (x402's",
        "   sign-in-with-x, the stock client's SIWX extension) or AGENT-PAY-ENTITLEMENT,",
        "   signed by the key that paid. Retrying a payment is safe: it is charged once;",
        "   a payment-identifier id names one payment (another payment under it: 409).",
        "",
        "## Articles",
        "",
    ]
    for article, offers in articles:
        prices = ", ".join(f"{price} {symbol}" for symbol, price in article.prices.items())
        schemes = ", ".join(sorted({offer.scheme for offer in offers}))
        summary = f": {article.summary}" if article.summary else ""
        lines.append(
            f"- [{article.title}]({base_url}/articles/{article.slug}){summary}"
            f" Price: {prices} (schemes: {schemes})."
        )
    lines += ["", "## Payment", ""]
    for asset in assets:
        lines.append(
            f"- {asset.symbol}: token {asset.address} on {asset.network}, "
            f"{asset.decimals} decimals (an amount of 100000 is {asset.format(100000)})."
        )
    lines += [
        "",
        "## Links",
        "",
        f"- [Catalogue (JSON)]({base_url}/articles)",
        f"- [x402 discovery: resources, prices, schemes, networks]({base_url}/.well-known/x402)",
        f"- [Receipt signer and re-read details]({base_url}/.well-known/agent-pay)",
        "",
    ]
    return "\n".join(lines)


def discovery_router(catalogue: Catalogue, paywall: Paywall, receipt_signer: str) -> APIRouter:
    """`GET /.well-known/x402` and `GET /llms.txt` for the server selling `catalogue`."""
    router = APIRouter()

    def priced() -> list[Priced]:
        return [(article, paywall.offers(article)) for article in catalogue]

    @router.get("/.well-known/x402")
    async def well_known_x402(request: Request) -> dict[str, Any]:
        return x402_discovery(
            str(request.base_url).rstrip("/"),
            priced(),
            receipt_signer=receipt_signer,
            networks=sorted({asset.network for asset in paywall.assets}),
            schemes=list(paywall.schemes),
        )

    @router.get("/llms.txt", response_class=PlainTextResponse)
    async def llms(request: Request) -> str:
        return llms_txt(str(request.base_url).rstrip("/"), priced(), paywall.assets)

    return router
