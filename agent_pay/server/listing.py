"""The free routes: what the server is and what it sells.

GET /                        where everything is
GET /articles                the catalogue: slugs, titles, authors, prices
GET /.well-known/agent-pay   the receipt signer's address and the extension names
GET /.well-known/x402        every article as x402's discovery lists a resource
GET /llms.txt                a plain-text guide for an LLM agent
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from agent_pay.server.catalogue import Catalogue
from agent_pay.server.discovery import discovery_router
from agent_pay.server.entitlements import discovery_document
from agent_pay.server.pages import Pages
from agent_pay.server.paywall import Paywall

__all__ = ["listing_router"]

_INDEX = {
    "service": "agent-pay",
    "articles": "/articles",
    "x402Version": 2,
    "discovery": "/.well-known/agent-pay",
    "x402Discovery": "/.well-known/x402",
    "llms": "/llms.txt",
}


def listing_router(
    catalogue: Catalogue, paywall: Paywall, pages: Pages, receipt_signer: str
) -> APIRouter:
    """The free routes of a server selling `catalogue`, its receipts signed by
    `receipt_signer` (an address)."""
    router = APIRouter()

    @router.get("/")
    async def index() -> dict[str, Any]:
        return dict(_INDEX)

    @router.get("/.well-known/agent-pay")
    async def discovery() -> dict[str, Any]:
        return discovery_document(receipt_signer, sorted({a.network for a in paywall.assets}))

    @router.get("/articles")
    async def list_articles() -> dict[str, Any]:
        return {"articles": [pages.summary(a) for a in catalogue]}

    router.include_router(discovery_router(catalogue, paywall, receipt_signer))  # x402, llms
    return router
