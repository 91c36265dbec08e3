"""The paywall: what a resource costs, reading the payment header, charging for a read.

`PaymentHeader` is a FastAPI dependency in the style of `fastapi.security`: a callable class
that reads `PAYMENT-SIGNATURE`, with an `auto_error` switch. With `auto_error=False` a request
without payment gets None, which is how the free preview is served.

`Paywall.match` finds the offer a payment accepted among those for one resource, and
`Paywall.payment_key` names the payment for the ledger; charging it exactly once is the
`Checkout`'s job (`agent_pay.server.checkout`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request

from agent_pay.assets import AssetRegistry
from agent_pay.errors import PaymentRejectedError, Reason
from agent_pay.facilitator.base import Facilitator
from agent_pay.protocol import (
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    ResourceInfo,
)
from agent_pay.protocol.codec import PAYMENT_SIGNATURE_HEADER, decode_header
from agent_pay.protocol.matching import match_offer
from agent_pay.server.catalogue import Article
from agent_pay.server.ledger import PaymentKey
from agent_pay.server.offers import ExactOffers, OfferBuilder

__all__ = ["PaymentHeader", "Paywall"]


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


class Paywall:
    """Prices articles through its offer builders and reads payments against the offers."""

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
        extensions: dict[str, Any] | None = None,
    ) -> PaymentRequired:
        """The `PAYMENT-REQUIRED` body for `article`; `error` names why a payment was refused."""
        resource = ResourceInfo(url=url, description=article.title, mime_type="application/json")
        return PaymentRequired(
            error=error, resource=resource, accepts=list(offers), extensions=extensions
        )

    def match(
        self, payment: PaymentPayload, offers: Sequence[PaymentRequirements], path: str
    ) -> PaymentRequirements:
        """The offer among `offers` (for the resource at `path`) that `payment` accepted.

        Raises PaymentRejectedError (402) with the reason when it names another resource or
        none of the offers.
        """
        if payment.resource is not None and urlsplit(payment.resource.url).path != path:
            # Two articles with the same author and price have identical offers: without this
            # check a payment made for one could be spent on the other.
            raise PaymentRejectedError(
                f"this payment was made for {payment.resource.url}", Reason.RESOURCE_MISMATCH
            )
        return match_offer(payment.accepted, offers)

    def payment_key(self, payment: PaymentPayload) -> PaymentKey:
        """The ledger key of a payment in one of our schemes (see `OfferBuilder.payment_key`)."""
        builder = self.schemes.get(payment.accepted.scheme)
        if builder is None:
            raise PaymentRejectedError(
                f"scheme {payment.accepted.scheme!r} is not offered", Reason.UNSUPPORTED_SCHEME
            )
        return builder.payment_key(payment)
