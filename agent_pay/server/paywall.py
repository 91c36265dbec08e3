"""The paywall: what a resource costs, reading the payment header, charging for a read.

`PaymentHeader` is a FastAPI dependency in the style of `fastapi.security`: a callable class
that reads `PAYMENT-SIGNATURE`, with an `auto_error` switch. With `auto_error=False` a request
without payment gets None, which is how the free preview is served.

`Paywall.verify` checks a payment against the offers for one resource and returns a `Charge`;
the route produces the content and only then calls `Charge.settle()`. So a read whose content
cannot be produced is never charged, and content is released only after settlement succeeded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request

from agent_pay.assets import AssetRegistry
from agent_pay.errors import (
    PaymentRejectedError,
    Reason,
    SettlementFailedError,
)
from agent_pay.facilitator.base import Facilitator
from agent_pay.protocol import (
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    ResourceInfo,
    SettleResponse,
)
from agent_pay.protocol.codec import PAYMENT_SIGNATURE_HEADER, decode_header
from agent_pay.protocol.matching import match_offer
from agent_pay.server.catalogue import Article
from agent_pay.server.offers import ExactOffers, OfferBuilder

__all__ = ["Charge", "PaymentHeader", "Paywall"]


class PaymentHeader:
    """Dependency: the decoded `PAYMENT-SIGNATURE` header.

    Raises MalformedPaymentError (400) for a header that cannot be read. Without a header it
    raises PaymentRejectedError when `auto_error` is set, and returns None otherwise.
    """

    def __init__(
        self, *, auto_error: bool = True, schemes: Mapping[str, OfferBuilder] | None = None
    ) -> None:
        self.auto_error = auto_error
        self.schemes = dict(schemes or {})

    async def __call__(self, request: Request) -> PaymentPayload | None:
        value = request.headers.get(PAYMENT_SIGNATURE_HEADER)
        if value is None:
            if self.auto_error:
                raise PaymentRejectedError("payment required", Reason.PAYMENT_REQUIRED)
            return None
        payment = decode_header(value, PaymentPayload)
        builder = self.schemes.get(payment.accepted.scheme)
        if builder is not None:
            builder.check_payload(payment)  # a malformed payload is as unreadable as the envelope
        return payment


@dataclass
class Charge:
    """A verified payment for one resource, not yet settled."""

    payment: PaymentPayload
    requirements: PaymentRequirements
    payer: str | None
    _facilitator: Facilitator

    async def settle(self) -> SettleResponse:
        """Move the money. Raises SettlementFailedError if the chain refused (nothing charged)."""
        response = await self._facilitator.settle(self.payment, self.requirements)
        if not response.success:
            raise SettlementFailedError(
                response.error_message or "settlement failed",
                _reason(response.error_reason, Reason.TRANSACTION_FAILED),
            )
        return response


class Paywall:
    """Prices articles through its offer builders and charges through a facilitator."""

    def __init__(
        self,
        assets: AssetRegistry,
        facilitator: Facilitator,
        schemes: Sequence[OfferBuilder] | None = None,
    ) -> None:
        self.assets = assets
        self.facilitator = facilitator
        self.schemes = {b.scheme: b for b in (schemes or [ExactOffers(assets)])}

    def offers(self, article: Article) -> list[PaymentRequirements]:
        """Every scheme's offers for `article`, in the order the schemes were given."""
        return [offer for builder in self.schemes.values() for offer in builder.offers(article)]

    def payment_required(
        self,
        article: Article,
        url: str,
        offers: Sequence[PaymentRequirements],
        error: str | None = None,
    ) -> PaymentRequired:
        """The `PAYMENT-REQUIRED` body for `article`; `error` names why a payment was refused."""
        resource = ResourceInfo(url=url, description=article.title, mime_type="application/json")
        return PaymentRequired(error=error, resource=resource, accepts=list(offers))

    async def verify(
        self, payment: PaymentPayload, offers: Sequence[PaymentRequirements], path: str
    ) -> Charge:
        """Match `payment` to one of `offers` for the resource at `path` and have the
        facilitator verify it.

        Raises PaymentRejectedError (402) with the reason when it would not settle.
        """
        if payment.resource is not None and urlsplit(payment.resource.url).path != path:
            # Two articles with the same author and price have identical offers: without this
            # check a payment made for one could be spent on the other.
            raise PaymentRejectedError(
                f"this payment was made for {payment.resource.url}", Reason.RESOURCE_MISMATCH
            )
        requirements = match_offer(payment.accepted, offers)
        verdict = await self.facilitator.verify(payment, requirements)
        if not verdict.is_valid:
            raise PaymentRejectedError(
                verdict.invalid_message or "payment is not valid",
                _reason(verdict.invalid_reason, Reason.INVALID_PAYLOAD),
            )
        return Charge(payment, requirements, verdict.payer, self.facilitator)


def _reason(code: str | None, default: Reason) -> Reason:
    """A facilitator's reason string as our enum; unknown codes (a stock facilitator's) fold
    into `default` rather than being passed through unchecked."""
    try:
        return Reason(code) if code else default
    except ValueError:
        return default
