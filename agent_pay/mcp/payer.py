"""Our client paying paid MCP tools of any x402 MCP server (x402's MCP transport), within a
spending policy — the `PaymentAuth` of MCP.

    payer = ToolPayer(client, signer, Spending.open(policy, directory, signer.address))
    paid = await payer.call_tool("premium_report", {})
    paid.result.content, paid.settlement.transaction

The first call goes out unpaid. A payment-required answer is checked against the policy
(over it: `PolicyViolationError`, nothing signed), the amount is reserved, the payment signed
and the call sent again with it in `_meta["x402/payment"]`. A settlement in the answer commits
the reservation; a payment-required answer again releases it (refused, so not charged) and
raises `PaymentRejectedError` (a resent payment refused is counted spent all the same: its
first answer was lost, and it may have gone through). Anything else keeps the reservation,
and the signed payment too: the next call of the same tool with the same arguments sends that
very payment again rather than sign another, so a retry after a lost answer cannot pay twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from mcp.types import CallToolResult

from agent_pay.client.policy import Spending
from agent_pay.client.schemes import ExactClientScheme
from agent_pay.errors import PaymentRejectedError, Reason
from agent_pay.mcp.transport import PAYMENT_META_KEY, payment_required_in, settlement_in
from agent_pay.protocol import PaymentPayload, PaymentRequirements, SettleResponse
from agent_pay.signing import Signer, random_nonce

__all__ = ["PaidCall", "ToolCaller", "ToolPayer"]


class ToolCaller(Protocol):
    """What calls MCP tools: `mcp.Client` or `mcp.ClientSession`."""

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        read_timeout_seconds: float | None = None,
        *,
        meta: Any = None,
    ) -> CallToolResult: ...


@dataclass(frozen=True, slots=True)
class PaidCall:
    """A tool's answer, and what was paid for it (None: the tool asked for nothing)."""

    result: CallToolResult
    offer: PaymentRequirements | None = None
    settlement: SettleResponse | None = None


class ToolPayer:
    """Calls tools through `client`, paying x402 payment-required answers with `signer`."""

    def __init__(
        self,
        client: ToolCaller,
        signer: Signer,
        spending: Spending,
        *,
        read_timeout_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
        nonce_factory: Callable[[], bytes] = random_nonce,
    ) -> None:
        self.client = client
        self.spending = spending
        self.scheme = ExactClientScheme(signer, clock=clock, nonce_factory=nonce_factory)
        self.read_timeout_seconds = read_timeout_seconds
        self.payments: list[PaidCall] = []
        self._pending: dict[str, tuple[PaymentPayload, PaymentRequirements]] = {}

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> PaidCall:
        """Call `name`, paying if it asks (see the module doc for every outcome).

        Raises:
            PolicyViolationError, NoAcceptableOfferError: not payable; nothing was signed.
            PaymentRejectedError: the server refused the payment; nothing was charged.
        """
        key = json.dumps([name, arguments or {}], sort_keys=True)
        pending = self._pending.get(key)
        resent = pending is not None
        if pending is None:
            result = await self._call(name, arguments)
            required = payment_required_in(result)
            if required is None:
                return PaidCall(result)
            # Raises when over policy: nothing is signed.
            offer = self.spending.choose(required.accepts, schemes=[self.scheme.scheme])
            self.spending.reserve(offer)
            pending = (self.scheme.sign(offer, required), offer)
            self._pending[key] = pending
        payload, offer = pending
        paid = await self._call(name, arguments, {PAYMENT_META_KEY: payload.to_wire()})
        settlement = settlement_in(paid)
        if not paid.is_error and settlement is not None and settlement.success:
            self.spending.commit(offer)
            del self._pending[key]
            call = PaidCall(paid, offer, settlement)
            self.payments.append(call)
            return call
        refused = payment_required_in(paid)
        if refused is not None:
            # Refused, so not charged; unless we sent it before and that answer was lost: it
            # may be the very payment that went through, so it stays counted (never under).
            del self._pending[key]
            if resent:
                self.spending.commit(offer)
            else:
                self.spending.release(offer)
            raise PaymentRejectedError(
                f"{name}: the server refused the payment ({refused.error or 'no reason'})",
                Reason.PAYMENT_REFUSED,
            )
        return PaidCall(paid, offer, None)  # outcome unknown: reserved, resent next time

    async def _call(
        self, name: str, arguments: dict[str, Any] | None, meta: dict[str, Any] | None = None
    ) -> CallToolResult:
        return await self.client.call_tool(
            name, arguments or {}, read_timeout_seconds=self.read_timeout_seconds, meta=meta
        )
