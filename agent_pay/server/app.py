"""The content server: free previews, HTTP 402 for the rest, the whole article once paid.

`create_server` builds its parts (paywall, ledger, checkout, entitlements, ...) and the ASGI
app that serves them, and hands both back as one `ContentServer`: whoever holds the server
reaches its parts there, never through the app. The routes are the free listing
(`agent_pay.server.listing`) and the reads (`agent_pay.server.reads`); their pages are
`agent_pay.server.pages`; one handler answers every `AgentPayError`
(`agent_pay.boundary.error_responses`).

The server never touches the chain (it asks its `Facilitator`), never charges for content it
could not produce, and charges each payment once however often it is sent
(`agent_pay.server.checkout`). A payer who bought an article re-reads it by proving its key
(`AGENT-PAY-ENTITLEMENT`, or x402's `SIGN-IN-WITH-X`), without paying again. Every 402
declares x402's extensions too (`agent_pay.server.declarations`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI

from agent_pay.assets import AssetRegistry
from agent_pay.boundary.error_responses import handle_errors
from agent_pay.facilitator.base import Facilitator
from agent_pay.server.catalogue import Catalogue
from agent_pay.server.checkout import Checkout
from agent_pay.server.declarations import Declarations
from agent_pay.server.entitlements import Entitlements, EntitlementSource, ReceiptIssuer
from agent_pay.server.faults import FaultPlan
from agent_pay.server.ledger import Ledger
from agent_pay.server.listing import listing_router
from agent_pay.server.offer_receipt import OfferReceipts
from agent_pay.server.offers import OfferBuilder
from agent_pay.server.pages import Pages
from agent_pay.server.payment_ids import PaymentIdentifiers
from agent_pay.server.paywall import Paywall
from agent_pay.server.reads import Reads, Renderer, reads_router, render_article
from agent_pay.server.siwx import SignInWithX
from agent_pay.signing import LocalSigner, Signer
from agent_pay.store.protocols import PaymentLedger, SpentNonces

__all__ = ["ContentServer", "Renderer", "create_server", "render_article"]


@dataclass(frozen=True)
class ContentServer:
    """A content server: its ASGI `app` and the parts it runs on."""

    app: FastAPI
    catalogue: Catalogue
    paywall: Paywall
    ledger: PaymentLedger
    checkout: Checkout
    entitlements: Entitlements
    faults: FaultPlan
    receipt_signer: str
    """The address that signs the server's receipts (published at /.well-known/agent-pay)."""


def create_server(
    catalogue: Catalogue,
    assets: AssetRegistry,
    facilitator: Facilitator,
    *,
    render: Renderer = render_article,
    schemes: Sequence[OfferBuilder] | None = None,
    ledger: PaymentLedger | None = None,
    siwx_nonces: SpentNonces | None = None,
    receipt_signer: Signer | None = None,
    entitlement_secret: bytes | None = None,
    faults: FaultPlan | None = None,
    records_submissions: bool = False,
    routes: Sequence[APIRouter] = (),
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
) -> ContentServer:
    """The server selling `catalogue`, priced in `assets`, settled by `facilitator`.

    Args:
        schemes: the payment schemes offered, in order of the server's preference; by
            default only "exact".
        ledger: the payment ledger. A server must pass a file (`Ledger.open(data_dir)`); the
            default, in memory, forgets every payment when the process ends. Several
            processes serve as one on a shared one (`agent_pay.store.open_store`).
        siwx_nonces: where accepted sign-in nonces are kept (this process's memory by
            default; the shared store's, for several processes).
        receipt_signer: signs receipts; its address is published. A fresh random key by
            default, so receipts from a restarted default server verify under a new address.
        entitlement_secret: HMAC key of re-read challenges and sign-in nonces (random by
            default; several processes serving as one share it).
        faults: where to inject a crash (fault-injection tests only).
        records_submissions: `facilitator` tells the ledger of each settlement transaction
            before broadcasting it (an in-process one built with `record_submissions`), so
            a settlement that never got that far is abandoned at once (see `Checkout`).
        routes: more routes to serve (a scheme's own: `channel_router`).
        on_shutdown: awaited, in order, when the app shuts down (ASGI lifespan): closes
            what lives on its event loop (the connections of a remote facilitator's clients).
    """
    catalogue.check_tokens({asset.symbol: asset.decimals for asset in assets})
    paywall = Paywall(assets, facilitator, schemes)
    ledger = ledger if ledger is not None else Ledger.in_memory()
    faults = faults or FaultPlan()
    issuer = ReceiptIssuer(receipt_signer or LocalSigner.random())
    sources = [b for b in paywall.schemes.values() if isinstance(b, EntitlementSource)]
    siwx = SignInWithX([a.network for a in assets], secret=entitlement_secret, nonces=siwx_nonces)
    entitlements = Entitlements(
        ledger, issuer, sources=sources, secret=entitlement_secret, siwx=siwx
    )
    checkout = Checkout(
        ledger, facilitator, issuer, faults=faults, records_submissions=records_submissions
    )
    offer_receipts = OfferReceipts(issuer.signer)
    pages = Pages(assets, paywall, Declarations(entitlements, offer_receipts))
    reads = Reads(
        catalogue,
        paywall,
        pages,
        checkout,
        entitlements,
        PaymentIdentifiers(ledger),
        offer_receipts,
        faults,
        render,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Resolve what a crash left in flight before the first request is accepted.
        await checkout.ensure_reconciled()
        yield
        for close in on_shutdown:
            await close()

    app = FastAPI(
        title="agent-pay content server", docs_url=None, redoc_url=None, lifespan=lifespan
    )
    handle_errors(app)
    app.include_router(listing_router(catalogue, paywall, pages, issuer.address))
    app.include_router(reads_router(reads))
    for router in routes:
        app.include_router(router)
    return ContentServer(
        app, catalogue, paywall, ledger, checkout, entitlements, faults, issuer.address
    )
