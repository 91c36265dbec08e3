"""How the client pays one offer, one `ClientScheme` per x402 scheme.

`PaymentAuth` picks an offer within the spending policy and hands it to the scheme that
pays it. A scheme signs; it never decides whether to pay (that is the policy's job).

The signed payment is its own ticket: `PaymentAuth` hands the very `PaymentPayload` that
`sign` returned (or, after a restart, the one it wrote down and sent again) back to `settled`
or `refused`, so a scheme with state (a channel's voucher) reads from it which payment the
answer is about, and keeps no hand-off of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from agent_pay.protocol import (
    X402_VERSION,
    ExactEvmPayload,
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    SettleResponse,
)
from agent_pay.signing import (
    Signer,
    TokenDomain,
    TransferAuthorization,
    random_nonce,
    sign_transfer_authorization,
)

__all__ = ["CLOCK_SKEW_SECONDS", "ClientScheme", "ExactClientScheme"]

CLOCK_SKEW_SECONDS = 600
"""validAfter is set this far in the past, as stock x402 clients do, so a node whose clock lags
ours still accepts the authorization at once."""


class ClientScheme(Protocol):
    """Signs payments for one x402 scheme."""

    @property
    def scheme(self) -> str: ...

    def sign(self, offer: PaymentRequirements, challenge: PaymentRequired) -> PaymentPayload:
        """Build and sign the `PAYMENT-SIGNATURE` payload paying `offer`."""
        ...

    def settled(self, payment: PaymentPayload, settlement: SettleResponse) -> None:
        """The server confirmed `payment`, one this scheme signed (a scheme with state updates
        it here)."""
        ...

    def refused(self, payment: PaymentPayload, reason: str | None) -> None:
        """The server refused `payment`, one this scheme signed: nothing was charged."""
        ...


class ExactClientScheme:
    """x402 "exact": one EIP-3009 `transferWithAuthorization` per payment. Stateless."""

    scheme = "exact"

    def __init__(
        self,
        signer: Signer,
        *,
        clock: Callable[[], float] = time.time,
        nonce_factory: Callable[[], bytes] = random_nonce,
    ) -> None:
        self.signer = signer
        self._clock = clock
        self._nonce_factory = nonce_factory

    def sign(self, offer: PaymentRequirements, challenge: PaymentRequired) -> PaymentPayload:
        now = int(self._clock())
        auth = TransferAuthorization(
            from_=self.signer.address,
            to=offer.pay_to,
            value=offer.amount,
            valid_after=max(0, now - CLOCK_SKEW_SECONDS),
            valid_before=now + offer.max_timeout_seconds,
            nonce=self._nonce_factory(),
        )
        signature = sign_transfer_authorization(
            self.signer, TokenDomain.from_requirements(offer), auth
        )
        payload = ExactEvmPayload(signature="0x" + signature.hex(), authorization=auth.to_wire())
        return PaymentPayload(
            x402_version=X402_VERSION,
            resource=challenge.resource,
            accepted=offer,
            payload=payload.to_wire(),
        )

    def settled(self, payment: PaymentPayload, settlement: SettleResponse) -> None:
        return None

    def refused(self, payment: PaymentPayload, reason: str | None) -> None:
        return None
