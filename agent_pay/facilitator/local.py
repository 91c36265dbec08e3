"""An in-process facilitator: the exact scheme run in worker threads, behind the async seam."""

from __future__ import annotations

from anyio import to_thread

from agent_pay.errors import MalformedPaymentError, PaymentRejectedError, SettlementFailedError
from agent_pay.facilitator.exact import SCHEME, ExactEvmScheme, Settlement
from agent_pay.protocol import (
    X402_VERSION,
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    SupportedKind,
    SupportedResponse,
    VerifyResponse,
)

__all__ = ["LocalFacilitator"]


class LocalFacilitator:
    """Implements `Facilitator` in this process over an `ExactEvmScheme`.

    `last_settlement` style details (gas used, block) are available through `settle_detailed`,
    which the demo and benchmarks use; the x402 surface is `verify`/`settle`/`supported`.
    """

    def __init__(self, scheme: ExactEvmScheme) -> None:
        self.scheme = scheme

    async def verify(
        self, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> VerifyResponse:
        try:
            payer = await to_thread.run_sync(self.scheme.verify, payment, requirements)
        except (PaymentRejectedError, MalformedPaymentError) as exc:
            return VerifyResponse(
                is_valid=False,
                invalid_reason=exc.reason,
                invalid_message=exc.message,
                payer=_claimed_payer(payment),
            )
        return VerifyResponse(is_valid=True, payer=payer)

    async def settle(
        self, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> SettleResponse:
        response, _ = await self.settle_detailed(payment, requirements)
        return response

    async def settle_detailed(
        self, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> tuple[SettleResponse, Settlement | None]:
        """Settle, and also return the on-chain details (gas, block) when it succeeded."""
        try:
            done = await to_thread.run_sync(self.scheme.settle, payment, requirements)
        except (PaymentRejectedError, MalformedPaymentError, SettlementFailedError) as exc:
            failed = SettleResponse(
                success=False,
                error_reason=exc.reason,
                error_message=exc.message,
                payer=_claimed_payer(payment),
                transaction="",
                network=requirements.network,
            )
            return failed, None
        ok = SettleResponse(
            success=True,
            payer=done.payer,
            transaction=done.transaction,
            network=requirements.network,
            amount=done.amount,
        )
        return ok, done

    async def supported(self) -> SupportedResponse:
        kind = SupportedKind(x402_version=X402_VERSION, scheme=SCHEME, network=self.scheme.network)
        return SupportedResponse(kinds=[kind], signers={"eip155:*": [self.scheme.signer_address]})


def _claimed_payer(payment: PaymentPayload) -> str | None:
    """The payer the payload claims to be, if it says; used only to label a refusal."""
    authorization = payment.payload.get("authorization")
    if isinstance(authorization, dict):
        claimed = authorization.get("from")
        if isinstance(claimed, str) and len(claimed) == 42:
            try:
                return VerifyResponse(is_valid=False, payer=claimed).payer
            except ValueError:
                return None
    return None
