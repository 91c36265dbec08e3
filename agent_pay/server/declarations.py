"""What every 402 declares in `extensions`, each entry in x402's `{info, schema}` shape.

- `agent-pay/entitlement`: the challenge our own client answers to re-read what it bought;
- `sign-in-with-x`: the message a stock x402 client signs to do the same;
- `payment-identifier`: that a payment may carry an idempotency key;
- `offer-receipt`: the offers of `accepts`, signed.

A scheme adds its own when it refuses a payment (the channel's statement), after these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlsplit

from agent_pay.protocol import PaymentRequirements
from agent_pay.protocol.extensions import ENTITLEMENT_EXTENSION, entitlement_declaration
from agent_pay.protocol.offer_receipt import OFFER_RECEIPT
from agent_pay.protocol.payment_identifier import (
    PAYMENT_IDENTIFIER,
    payment_identifier_declaration,
)
from agent_pay.protocol.siwx import SIGN_IN_WITH_X
from agent_pay.server.entitlements import Entitlements
from agent_pay.server.offer_receipt import OfferReceipts

__all__ = ["Declarations"]

_PAYMENT_IDENTIFIER: Final = payment_identifier_declaration(required=False)


class Declarations:
    """Builds the `extensions` of a 402 from the server's parts."""

    def __init__(self, entitlements: Entitlements, offer_receipts: OfferReceipts) -> None:
        self.entitlements = entitlements
        self.offer_receipts = offer_receipts

    def for_402(self, url: str, offers: Sequence[PaymentRequirements]) -> dict[str, Any]:
        """The extensions of a 402 for `url` (the full request URL) offering `offers`."""
        challenge = self.entitlements.challenge(urlsplit(url).path)
        extensions = {ENTITLEMENT_EXTENSION: entitlement_declaration(challenge)}
        siwx = self.entitlements.siwx
        if siwx is not None:
            extensions[SIGN_IN_WITH_X] = siwx.declaration(url)
        extensions[PAYMENT_IDENTIFIER] = _PAYMENT_IDENTIFIER
        extensions[OFFER_RECEIPT] = self.offer_receipts.declaration(url, offers)
        return extensions
