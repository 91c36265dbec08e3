"""`GET /articles/{slug}`: the free preview (402), a paid read, a re-read by proof of key.

A paid read goes: verify → record (ledger) → produce the content → record "settling" →
settle → record "settled" → respond with PAYMENT-RESPONSE and a signed receipt
(`agent_pay.server.checkout`). A read paid inline (a channel voucher:
`agent_pay.server.inline`) skips the ledger and carries no receipt, but earns the re-read,
which answers with the signed receipt. A payment refused is the 402 again, with its reason;
every other error is the server's one handler's (`agent_pay.boundary.error_responses`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from agent_pay.errors import (
    AgentPayError,
    ChainUnavailableError,
    PaymentRejectedError,
    Reason,
    SettlementFailedError,
)
from agent_pay.protocol import PaymentPayload, PaymentRequirements
from agent_pay.protocol.codec import PAYMENT_RESPONSE_HEADER, encode_header
from agent_pay.protocol.extensions import RECEIPT_HEADER, EntitlementProof
from agent_pay.protocol.siwx import SiwxPayload
from agent_pay.server.catalogue import Article, Catalogue
from agent_pay.server.checkout import Checkout, Purchase
from agent_pay.server.entitlements import EntitlementHeader, Entitlements
from agent_pay.server.faults import FaultPlan, FaultPoint
from agent_pay.server.inline import InlineCharge
from agent_pay.server.offer_receipt import OfferReceipts
from agent_pay.server.pages import EXPOSED, Pages
from agent_pay.server.payment_ids import PaymentIdentifiers
from agent_pay.server.paywall import PaymentHeader, Paywall
from agent_pay.server.siwx import SiwxHeader
from agent_pay.server.timings import server_timing

__all__ = ["Reads", "Renderer", "reads_router", "render_article"]

log = logging.getLogger(__name__)

Renderer = Callable[[Article], str]
"""Produces the full text of a paid article. If it raises, the read is not charged."""


def render_article(article: Article) -> str:
    return article.body


@dataclass(frozen=True)
class Reads:
    """Serves the reads of one catalogue: what `GET /articles/{slug}` does."""

    catalogue: Catalogue
    paywall: Paywall
    pages: Pages
    checkout: Checkout
    entitlements: Entitlements
    payment_ids: PaymentIdentifiers
    offer_receipts: OfferReceipts
    faults: FaultPlan
    render: Renderer = render_article

    async def read(
        self,
        slug: str,
        request: Request,
        payment: PaymentPayload | None,
        proof: EntitlementProof | None,
        sign_in: SiwxPayload | None,
    ) -> Response:
        article = self.catalogue.get(slug)
        if article is None:
            raise _NotFound(f"no article {slug!r}")
        # Without a lifespan (an ASGI test client), the first request runs the reconciliation.
        await self.checkout.ensure_reconciled()
        offers = self.paywall.offers(article)
        prover: str | None = None
        if proof is not None or sign_in is not None:
            # Either proof of the payer's key, checked once per request (a sign-in is used up).
            # It re-reads what the payer bought; beside a payment, it also lets the payer
            # claim its own authorization once the header alone no longer reads.
            try:
                prover = await self.entitlements.proven_payer(
                    str(request.url), entitlement=proof, siwx=sign_in
                )
                if prover is not None:
                    return await self._reread(article, request, prover)
            except PaymentRejectedError as exc:
                if payment is None:
                    return self.pages.refusal(article, request, offers, exc)
        if payment is None:
            return self.pages.refusal(article, request, offers)
        try:
            return await self._buy(article, request, offers, payment, prover)
        except (PaymentRejectedError, SettlementFailedError) as exc:
            return self.pages.refusal(article, request, offers, exc)
        except AgentPayError:
            raise  # the server's handler answers it: 400, 409, 503
        except Exception as exc:
            # Never a 500 on the paid path: whatever it was, the ledger keeps the payment and
            # a retry of the same header resolves it.
            log.exception("unexpected error on the paid path")
            raise ChainUnavailableError("unexpected server error; retry") from exc

    async def _reread(self, article: Article, request: Request, payer: str) -> Response:
        grant = await self.entitlements.grant(payer, request.url.path)
        content = self._produce(article, "the article could not be produced")
        receipt = grant.receipt
        headers = {RECEIPT_HEADER: encode_header(receipt)} if receipt is not None else {}
        return self.pages.whole(article, content, headers)

    async def _buy(
        self,
        article: Article,
        request: Request,
        offers: list[PaymentRequirements],
        payment: PaymentPayload,
        prover: str | None,
    ) -> Response:
        path = request.url.path
        requirements = self.paywall.match(payment, offers, path)
        # x402's payment-identifier: one id names one payment, and its maker may ask again.
        # An id first seen after its payment was recorded is not the payer's (see `bind`).
        retried = bool(payment.extensions) and await self.payment_ids.bind(
            payment, path, self.paywall.payment_key
        )
        # A scheme that can charge this payment at once, without the ledger (see
        # agent_pay.server.inline), is asked first: a channel voucher costs no I/O.
        builder = self.paywall.schemes.get(requirements.scheme)
        charge_inline = getattr(builder, "charge_inline", None)
        if charge_inline is not None:
            url = str(request.url)
            charge: InlineCharge | None = await charge_inline(payment, requirements, path, url=url)
            if charge is not None:
                return await self._charged(article, charge)
        key = self.paywall.payment_key(payment)
        purchase = Purchase(
            key,
            payment,
            requirements,
            path,
            str(request.url),
            payer_proven=retried or prover == key.payer,
        )
        timings: dict[str, float] = {}
        paid = await self.checkout.pay(purchase, partial(self.render, article), timings=timings)
        settlement = self.offer_receipts.with_receipt(paid.settle_response(), paid.entry)
        headers = {
            PAYMENT_RESPONSE_HEADER: encode_header(settlement),
            "Access-Control-Expose-Headers": EXPOSED + ", Server-Timing",
            "Server-Timing": server_timing(timings),
        }
        response = self.pages.whole(article, paid.content, headers)
        self.faults.hit(FaultPoint.RESPONDING)
        # Recorded as the answer is handed over, not after it left: a copy of the header sent
        # the moment the payer has its article must already find it delivered (and read no
        # more without a proof). A payer whose answer is lost from here claims it by proof.
        await self.checkout.delivered(purchase.key)
        return response

    async def _charged(self, article: Article, charge: InlineCharge) -> Response:
        """A read charged inline: produce it, or undo the charge."""
        try:
            content = self._produce(
                article, "the article could not be produced; nothing was charged"
            )
        except ChainUnavailableError:
            await charge.release()
            raise
        return self.pages.charged_inline(article, content, charge.response_header())

    def _produce(self, article: Article, failure: str) -> str:
        try:
            return self.render(article)
        except Exception as exc:
            log.exception("producing the content failed")
            raise ChainUnavailableError(failure, Reason.CONTENT_UNAVAILABLE, 1) from exc


def reads_router(reads: Reads) -> APIRouter:
    """The route of `reads`, its headers read by dependencies."""
    router = APIRouter()
    payment_header = PaymentHeader(auto_error=False, schemes=reads.paywall.schemes)
    entitlement_header = EntitlementHeader()
    siwx_header = SiwxHeader()

    @router.get("/articles/{slug}")
    async def read_article(
        slug: str,
        request: Request,
        # Defaults rather than Annotated: the dependencies are local, which string
        # annotations (this module uses `from __future__ import annotations`) cannot see.
        payment: PaymentPayload | None = Depends(payment_header),
        proof: EntitlementProof | None = Depends(entitlement_header),
        sign_in: SiwxPayload | None = Depends(siwx_header),
    ) -> Response:
        return await reads.read(slug, request, payment, proof, sign_in)

    return router


class _NotFound(AgentPayError):
    status_code = 404
    default_reason = Reason.NOT_FOUND
