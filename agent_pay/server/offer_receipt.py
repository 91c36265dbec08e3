"""x402's offer-receipt on the server: offers signed in every 402, a receipt in every paid answer.

Both are signed with the server's receipt key (the `ReceiptIssuer`'s, published as
`receiptSigner` at `/.well-known/agent-pay` and `/.well-known/x402`). An offer commits to its
terms until `validUntil`: the next whole minute at least `ttl` seconds ahead, so one signature
serves every 402 for that URL within the minute (signing costs far more than the rest of a
402; the entry is built once and shared, so callers must not change it). A receipt is built
from the ledger entry — payer, URL, network, transaction, and the `issuedAt` of agent-pay's
own receipt — so the same payment always gets the same receipt.
Reads paid inline by channel voucher carry none, as they carry no `agent-pay/receipt`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from agent_pay.protocol import PaymentRequirements, SettleResponse
from agent_pay.protocol.offer_receipt import (
    OFFER_RECEIPT,
    OfferPayload,
    ReceiptPayload,
    SignedOffer,
    offers_declaration,
    receipt_declaration,
)
from agent_pay.server.ledger_entry import Entry
from agent_pay.signing import Signer
from agent_pay.signing.offer_receipt import sign_offer, sign_x402_receipt

__all__ = ["OFFER_TTL_SECONDS", "OfferReceipts"]

OFFER_TTL_SECONDS: Final = 300
"""An offer is honoured for at least this long after the 402 that carried it."""
_GRAIN: Final = 60
_KEPT: Final = 1024  # declarations cached (one per URL and minute)


class OfferReceipts:
    """Signs the offers of 402s (cached) and the receipts of paid reads with `signer`."""

    def __init__(
        self,
        signer: Signer,
        *,
        ttl: int = OFFER_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signer = signer
        self.ttl = ttl
        self._clock = clock
        # (url, validUntil) -> the offers and their declaration: one dict for a minute of 402s.
        self._declared: dict[tuple[str, int], tuple[list[PaymentRequirements], dict[str, Any]]] = {}

    def declaration(self, url: str, offers: Sequence[PaymentRequirements]) -> dict[str, Any]:
        """The `extensions["offer-receipt"]` entry of a 402 for `url` offering `offers`."""
        valid_until = -(-(int(self._clock()) + self.ttl) // _GRAIN) * _GRAIN
        known = self._declared.get((url, valid_until))
        if known is not None and known[0] == offers:
            return known[1]
        if len(self._declared) >= _KEPT:
            self._declared.clear()
        entry = offers_declaration(
            [self._sign(url, offer, valid_until, i) for i, offer in enumerate(offers)]
        )
        self._declared[(url, valid_until)] = (list(offers), entry)
        return entry

    def _sign(
        self, url: str, offer: PaymentRequirements, valid_until: int, index: int
    ) -> SignedOffer:
        wire = offer.to_wire()
        payload = OfferPayload(
            resource_url=url,
            scheme=offer.scheme,
            network=offer.network,
            asset=wire["asset"],
            pay_to=wire["payTo"],
            amount=wire["amount"],
            valid_until=valid_until,
        )
        return sign_offer(self.signer, payload, index)

    def with_receipt(self, response: SettleResponse, entry: Entry) -> SettleResponse:
        """`response` (a paid answer's) with the x402 receipt of `entry` in its extensions."""
        ours = entry.receipt
        payload = ReceiptPayload(
            network=entry.network,
            resource_url=entry.resource_url,
            payer=entry.key.payer,
            issued_at=ours.issued_at if ours is not None else int(self._clock()),
            transaction=entry.tx_hash or "",
        )
        receipt = sign_x402_receipt(self.signer, payload)
        extensions = {**(response.extensions or {}), OFFER_RECEIPT: receipt_declaration(receipt)}
        return response.model_copy(update={"extensions": extensions})
