"""The facilitator role: the resource server asks it to verify and settle payments.

`Facilitator` is the seam between the server and the chain. Two implementations: the in-process
`LocalFacilitator` and `HttpFacilitatorClient`, which talks to any x402 v2 facilitator
(ours, served by `facilitator.http.create_facilitator_app`, or a stock one).

Outcomes that concern the payment come back as values (`VerifyResponse.is_valid`,
`SettleResponse.success` with a reason), as x402 facilitators answer them; trouble with the
chain or the facilitator itself raises `ChainUnavailableError`.
"""

from __future__ import annotations

from typing import Protocol

from agent_pay.protocol import (
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    SupportedResponse,
    VerifyResponse,
)

__all__ = ["Facilitator"]


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
