"""The facilitator role: the resource server asks it to verify and settle payments.

`Facilitator` is the seam between the server and the chain. Two implementations: the in-process
`LocalFacilitator` and `HttpFacilitatorClient`, which talks to any x402 v2 facilitator
(ours, served by `facilitator.http.create_facilitator_app`, or a stock one).

Outcomes that concern the payment come back as values (`VerifyResponse.is_valid`,
`SettleResponse.success` with a reason), as x402 facilitators answer them; trouble with the
chain or the facilitator itself raises `ChainUnavailableError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from agent_pay.protocol import (
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    SupportedKind,
    SupportedResponse,
    VerifyResponse,
)

__all__ = ["Facilitator", "SchemeHandler", "Settlement"]


@dataclass(frozen=True, slots=True)
class Settlement:
    """A payment that has been settled: money moved, or (for a channel) a voucher recorded."""

    payer: str
    transaction: str  # 0x-hex hash of the settling transaction; "" when none was needed
    amount: int
    gas_used: int = 0
    block_number: int | None = None


class SchemeHandler(Protocol):
    """One payment scheme on one network, as the facilitator runs it. Synchronous: the
    `LocalFacilitator` calls it from worker threads.

    `verify` and `settle` raise `PaymentRejectedError` / `MalformedPaymentError` /
    `SettlementFailedError` for the payment's faults and `ChainUnavailableError` for the
    chain's.
    """

    @property
    def scheme(self) -> str: ...

    @property
    def network(self) -> str: ...

    def verify(self, payment: PaymentPayload, requirements: PaymentRequirements) -> str:
        """Check that `payment` would settle now; return the payer's address."""
        ...

    def settle(self, payment: PaymentPayload, requirements: PaymentRequirements) -> Settlement:
        """Settle `payment`; return what happened."""
        ...

    def supported_kind(self) -> SupportedKind:
        """How `/supported` lists this handler."""
        ...


class Facilitator(Protocol):
    """Verify and settle x402 payments."""

    async def verify(
        self, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> VerifyResponse:
        """Would `payment` settle for `requirements` right now? Nothing moves."""
        ...

    async def settle(
        self, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> SettleResponse:
        """Move the money: verify again, submit, wait for confirmation."""
        ...

    async def supported(self) -> SupportedResponse:
        """The (version, scheme, network) kinds this facilitator handles."""
        ...
