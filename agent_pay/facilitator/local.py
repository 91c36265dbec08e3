"""An in-process facilitator: scheme handlers run in worker threads, behind the async seam."""

from __future__ import annotations

from collections.abc import Iterable

from anyio import to_thread

from agent_pay.errors import (
    MalformedPaymentError,
    PaymentRejectedError,
    Reason,
    SettlementFailedError,
)
from agent_pay.facilitator.base import SchemeHandler, Settlement
from agent_pay.protocol import (
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    SupportedResponse,
    VerifyResponse,
)

__all__ = ["LocalFacilitator"]


class LocalFacilitator:
    """Implements `Facilitator` in this process by dispatching to one `SchemeHandler` per
    (scheme, network). `settle_detailed` also returns the on-chain details (gas, block)."""

    def __init__(self, handlers: SchemeHandler | Iterable[SchemeHandler]) -> None:
        if not isinstance(handlers, Iterable):
            handlers = [handlers]
        self.handlers: dict[tuple[str, str], SchemeHandler] = {
            (h.scheme, h.network): h for h in handlers
        }

    def handler(self, requirements: PaymentRequirements) -> SchemeHandler:
        """The handler for `requirements`; PaymentRejectedError when none is configured."""
        handler = self.handlers.get((requirements.scheme, requirements.network))
        if handler is not None:
            return handler
        if any(scheme == requirements.scheme for scheme, _ in self.handlers):
            raise PaymentRejectedError(
                f"network {requirements.network} is not settled here", Reason.NETWORK_MISMATCH
            )
        raise PaymentRejectedError(
            f"scheme {requirements.scheme!r} is not settled here", Reason.UNSUPPORTED_SCHEME
        )

    async def verify(
        self, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> VerifyResponse:
        try:
            handler = self.handler(requirements)
            payer = await to_thread.run_sync(handler.verify, payment, requirements)
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
            handler = self.handler(requirements)
            done = await to_thread.run_sync(handler.settle, payment, requirements)
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
        kinds = [h.supported_kind() for h in self.handlers.values()]
        signers = sorted({s for h in self.handlers.values() for s in _signers(h)})
        return SupportedResponse(kinds=kinds, signers={"eip155:*": signers})


def _signers(handler: SchemeHandler) -> list[str]:
    address = getattr(handler, "signer_address", None)
    return [address] if isinstance(address, str) else []


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
