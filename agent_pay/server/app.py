"""The content server: free previews, HTTP 402 for the rest, the whole article once paid.

    GET /articles                the catalogue: slugs, titles, authors, prices
    GET /articles/{slug}         402 + first third + PAYMENT-REQUIRED, or 200 + whole article
    GET /.well-known/agent-pay   the receipt signer's address and the extension names
    GET /.well-known/x402        every article as x402's discovery lists a resource
    GET /llms.txt                a plain-text guide for an LLM agent

A paid read goes: verify → record (ledger) → produce the content → record "settling" →
settle → record "settled" → respond with PAYMENT-RESPONSE and a signed receipt. The server
never touches the chain (it asks its `Facilitator`), never charges for content it could not
produce, and charges each payment once however often it is sent (`agent_pay.server.checkout`).
A read paid inline (a channel voucher: `agent_pay.server.inline`) skips the ledger and carries
no receipt (signing one would cost more than the rest of the read), but earns the re-read below
(its scheme records it), which answers with the signed receipt.
A payer who bought an article re-reads it by proving its key (`AGENT-PAY-ENTITLEMENT`, or
x402's `SIGN-IN-WITH-X`), without paying again. Every 402 declares x402's extensions too
(`agent_pay.server.declarations`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from agent_pay.assets import AssetRegistry
from agent_pay.errors import (
    AgentPayError,
    ChainUnavailableError,
    MalformedPaymentError,
    PaymentConflictError,
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
from agent_pay.protocol.extensions import RECEIPT_HEADER, EntitlementProof
from agent_pay.protocol.siwx import SiwxPayload
from agent_pay.server.catalogue import Article, Catalogue
from agent_pay.server.checkout import Checkout, Purchase
from agent_pay.server.declarations import Declarations
from agent_pay.server.discovery import discovery_router
from agent_pay.server.entitlements import (
    EntitlementHeader,
    Entitlements,
    EntitlementSource,
    ReceiptIssuer,
    discovery_document,
)
from agent_pay.server.faults import FaultPlan, FaultPoint
from agent_pay.server.inline import InlineCharge
from agent_pay.server.ledger import Ledger
from agent_pay.server.offer_receipt import OfferReceipts
from agent_pay.server.offers import OfferBuilder
from agent_pay.server.payment_ids import PaymentIdentifiers
from agent_pay.server.paywall import PaymentHeader, Paywall
from agent_pay.server.siwx import SignInWithX, SiwxHeader
from agent_pay.server.timings import server_timing
from agent_pay.signing import LocalSigner, Signer
from agent_pay.store.protocols import PaymentLedger, SpentNonces

__all__ = ["Renderer", "create_app", "render_article"]

log = logging.getLogger(__name__)

Renderer = Callable[[Article], str]
"""Produces the full text of a paid article. If it raises, the read is not charged."""

_EXPOSED = ", ".join([PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER, RECEIPT_HEADER])


def render_article(article: Article) -> str:
    return article.body


def _error(exc: AgentPayError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": exc.reason, "message": exc.message}, exc.status_code, headers)


def _unavailable(exc: ChainUnavailableError) -> JSONResponse:
    return _error(exc, {"Retry-After": str(exc.retry_after)})


def create_app(
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
) -> FastAPI:
    """Build the ASGI app selling `catalogue`, priced in `assets`, settled by `facilitator`.

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
            before broadcasting it (an in-process one wired with `record_submissions`), so
            a settlement that never got that far is abandoned at once (see `Checkout`).
    """
    catalogue.check_tokens({asset.symbol: asset.decimals for asset in assets})
    paywall = Paywall(assets, facilitator, schemes)
    ledger = ledger if ledger is not None else Ledger.in_memory()
    issuer = ReceiptIssuer(receipt_signer or LocalSigner.random())
    sources = [b for b in paywall.schemes.values() if isinstance(b, EntitlementSource)]
    siwx = SignInWithX([a.network for a in assets], secret=entitlement_secret, nonces=siwx_nonces)
    entitlements = Entitlements(
        ledger, issuer, sources=sources, secret=entitlement_secret, siwx=siwx
    )
    faults = faults or FaultPlan()
    checkout = Checkout(
        ledger, facilitator, issuer, faults=faults, records_submissions=records_submissions
    )
    payment_ids = PaymentIdentifiers(ledger)
    offer_receipts = OfferReceipts(issuer.signer)
    declarations = Declarations(entitlements, offer_receipts)
    payment_header = PaymentHeader(auto_error=False, schemes=paywall.schemes)
    entitlement_header = EntitlementHeader()
    siwx_header = SiwxHeader()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Resolve what a crash left in flight before the first request is accepted.
        await checkout.ensure_reconciled()
        yield

    app = FastAPI(
        title="agent-pay content server", docs_url=None, redoc_url=None, lifespan=lifespan
    )
    app.state.paywall = paywall
    app.state.catalogue = catalogue
    app.state.ledger = ledger
    app.state.checkout = checkout
    app.state.entitlements = entitlements
    app.state.receipt_signer = issuer.address
    app.state.faults = faults

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
        request: Request,
        offers: Sequence[PaymentRequirements],
        exc: AgentPayError | None = None,
    ) -> Response:
        extensions = declarations.for_402(str(request.url), offers)
        extensions.update(getattr(exc, "extensions", None) or {})  # a scheme's own (channel)
        required = paywall.payment_required(
            article, str(request.url), offers, exc.reason if exc else None, extensions=extensions
        )
        headers = {
            PAYMENT_REQUIRED_HEADER: encode_header(required),
            "Access-Control-Expose-Headers": _EXPOSED,
            "Cache-Control": "no-store",
        }
        if exc is None:  # the first 402 of every paid read: the same body for every reader
            return Response(preview_page(article), 402, headers, media_type="application/json")
        body = preview_body(article, exc.reason, exc.message)
        return JSONResponse(body, 402, headers)

    def preview_body(article: Article, error: str, message: str) -> dict[str, Any]:
        body = page(article, article.preview, complete=False)
        body["error"] = error
        body["message"] = message
        return body

    def preview_page(article: Article) -> bytes:
        """The encoded 402 body when no payment was refused, kept per article."""
        kept = preview_pages.get(article.slug)
        if kept is None or kept[0] is not article:
            body = preview_body(article, Reason.PAYMENT_REQUIRED, _PAY_TO_READ)
            kept = preview_pages[article.slug] = (article, bytes(JSONResponse(body).body))
        return kept[1]

    @app.exception_handler(MalformedPaymentError)
    async def malformed(_: Request, exc: MalformedPaymentError) -> Response:
        return _error(exc)

    @app.exception_handler(ChainUnavailableError)
    async def unavailable(_: Request, exc: ChainUnavailableError) -> Response:
        return _unavailable(exc)

    @app.get("/")
    async def index() -> dict[str, Any]:
        return {
            "service": "agent-pay",
            "articles": "/articles",
            "x402Version": 2,
            "discovery": "/.well-known/agent-pay",
            "x402Discovery": "/.well-known/x402",
            "llms": "/llms.txt",
        }

    @app.get("/.well-known/agent-pay")
    async def discovery() -> dict[str, Any]:
        return discovery_document(issuer.address, sorted({a.network for a in assets}))

    app.include_router(discovery_router(catalogue, paywall, issuer.address))  # x402, llms.txt

    @app.get("/articles")
    async def list_articles() -> dict[str, Any]:
        return {"articles": [summary(a) for a in catalogue]}

    @app.get("/articles/{slug}")
    async def read_article(
        slug: str,
        request: Request,
        # Defaults rather than Annotated: the dependencies are local, which string
        # annotations (this module uses `from __future__ import annotations`) cannot see.
        payment: PaymentPayload | None = Depends(payment_header),
        proof: EntitlementProof | None = Depends(entitlement_header),
        sign_in: SiwxPayload | None = Depends(siwx_header),
    ) -> Response:
        article = catalogue.get(slug)
        if article is None:
            return _error(_NotFound(f"no article {slug!r}"))
        # Without a lifespan (an ASGI test client), the first request runs the reconciliation.
        await checkout.ensure_reconciled()
        offers = paywall.offers(article)
        prover: str | None = None
        if proof is not None or sign_in is not None:
            # Either proof of the payer's key, checked once per request (a sign-in is used up).
            # It re-reads what the payer bought; beside a payment, it also lets the payer
            # claim its own authorization once the header alone no longer reads.
            try:
                prover = entitlements.proven_payer(
                    str(request.url), entitlement=proof, siwx=sign_in
                )
                if prover is not None:
                    return reread(article, request, prover)
            except PaymentRejectedError as exc:
                if payment is None:
                    return refuse(article, request, offers, exc)
            except ChainUnavailableError as exc:
                return _unavailable(exc)
        if payment is None:
            return refuse(article, request, offers)
        try:
            return await buy(article, request, offers, payment, prover)
        except (PaymentRejectedError, SettlementFailedError) as exc:
            return refuse(article, request, offers, exc)
        except (MalformedPaymentError, PaymentConflictError) as exc:  # 400, 409
            return _error(exc)
        except ChainUnavailableError as exc:
            return _unavailable(exc)
        except Exception:
            # Never a 500 on the paid path: whatever it was, the ledger keeps the payment and
            # a retry of the same header resolves it.
            log.exception("unexpected error on the paid path")
            return _unavailable(ChainUnavailableError("unexpected server error; retry"))

    def reread(article: Article, request: Request, payer: str) -> Response:
        grant = entitlements.grant(payer, request.url.path)
        try:
            content = render(article)
        except Exception:
            log.exception("producing the content failed")
            return _unavailable(
                ChainUnavailableError(
                    "the article could not be produced", Reason.CONTENT_UNAVAILABLE, 1
                )
            )
        headers = {
            "Access-Control-Expose-Headers": _EXPOSED,
            "Cache-Control": "private, no-store",
        }
        receipt = grant.receipt
        if receipt is not None:
            headers[RECEIPT_HEADER] = encode_header(receipt)
        return JSONResponse(page(article, content, complete=True), 200, headers)

    async def buy(
        article: Article,
        request: Request,
        offers: Sequence[PaymentRequirements],
        payment: PaymentPayload,
        prover: str | None,
    ) -> Response:
        path = request.url.path
        requirements = paywall.match(payment, offers, path)
        # x402's payment-identifier: one id names one payment, and its maker may ask again.
        # An id first seen after its payment was recorded is not the payer's (see `bind`).
        retried = bool(payment.extensions) and await payment_ids.bind(
            payment, path, paywall.payment_key
        )
        # A scheme that can charge this payment at once, without the ledger (see
        # agent_pay.server.inline), is asked first: a channel voucher costs no I/O.
        charge_inline = getattr(paywall.schemes.get(requirements.scheme), "charge_inline", None)
        if charge_inline is not None:
            url = str(request.url)
            charge: InlineCharge | None = charge_inline(payment, requirements, path, url=url)
            if charge is not None:
                return serve_charged(article, charge)
        key = paywall.payment_key(payment)
        purchase = Purchase(
            key,
            payment,
            requirements,
            path,
            str(request.url),
            payer_proven=retried or prover == key.payer,
        )
        timings: dict[str, float] = {}
        paid = await checkout.pay(purchase, partial(render, article), timings=timings)
        body = page(article, paid.content, complete=True)
        settlement = offer_receipts.with_receipt(paid.settle_response(), paid.entry)
        headers = {
            PAYMENT_RESPONSE_HEADER: encode_header(settlement),
            "Access-Control-Expose-Headers": _EXPOSED + ", Server-Timing",
            "Cache-Control": "private, no-store",
            "Server-Timing": server_timing(timings),
        }
        faults.hit(FaultPoint.RESPONDING)
        # Recorded as the answer is handed over, not after it left: a copy of the header sent
        # the moment the payer has its article must already find it delivered (and read no
        # more without a proof). A payer whose answer is lost from here claims it by proof.
        await checkout.delivered(purchase.key)
        return JSONResponse(body, 200, headers)

    def serve_charged(article: Article, charge: InlineCharge) -> Response:
        """A read charged inline: produce it, or undo the charge."""
        try:
            content = render(article)
        except Exception:
            charge.release()
            log.exception("producing the content failed")
            return _unavailable(
                ChainUnavailableError(
                    "the article could not be produced; nothing was charged",
                    Reason.CONTENT_UNAVAILABLE,
                    1,
                )
            )
        # The whole page is the same for every reader: encode it once per (article, content).
        key = (article.slug, content)
        body = paid_pages.get(key)
        if body is None:
            if len(paid_pages) >= _PAID_PAGES:
                paid_pages.clear()
            body = paid_pages[key] = bytes(JSONResponse(page(article, content, complete=True)).body)
        return _InlinePaidPage(body, charge.response_header())

    paid_pages: dict[tuple[str, str], bytes] = {}
    preview_pages: dict[str, tuple[Article, bytes]] = {}  # at most one per catalogue article
    return app


_PAID_PAGES = 256  # encoded paid pages kept for inline-charged reads
_PAY_TO_READ = "pay to read the rest of this article"


class _InlinePaidPage(Response):
    """The 200 of a read charged inline, its fixed headers encoded once (Starlette encodes a
    response's header dict afresh each time: about 1 µs of every voucher read)."""

    media_type = "application/json"
    _FIXED: Final = [
        (b"access-control-expose-headers", _EXPOSED.encode("latin-1")),
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


class _NotFound(AgentPayError):
    status_code = 404
    default_reason = Reason.NOT_FOUND
