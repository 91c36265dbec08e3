"""The in-process `ChannelFacilitator`: the content server's channel seam on a `ChannelEvmScheme`
in the same process. Every call is pure CPU on the event loop, as the fast path needs (the
methods are coroutines only to share the seam with the remote one; none suspends but a
look-up of a paid read on a shared store, a round trip run off the loop)."""

from __future__ import annotations

from typing import Any

from anyio import to_thread

from agent_pay.errors import PaymentRejectedError
from agent_pay.facilitator.base import ChannelTerms
from agent_pay.facilitator.channel.persistence import ChannelLeases
from agent_pay.facilitator.channel.records import Acceptance, ChannelRefusedError, PaidRead
from agent_pay.facilitator.channel.scheme import ChannelEvmScheme
from agent_pay.protocol import PaymentPayload, PaymentRequirements

__all__ = ["LocalChannelFacilitator"]


class LocalChannelFacilitator:
    """`handler`'s channels, as a content server in the same process asks for them."""

    remote = False

    def __init__(self, handler: ChannelEvmScheme) -> None:
        self.handler = handler
        self.terms: ChannelTerms = handler.terms
        self._vouchers = handler.vouchers
        self._book = handler.book
        self._shared = isinstance(handler.store, ChannelLeases)

    def __repr__(self) -> str:
        return f"LocalChannelFacilitator({self.handler!r})"

    async def accept(
        self,
        payment: PaymentPayload,
        requirements: PaymentRequirements,
        resource: str,
        *,
        url: str | None = None,
    ) -> Acceptance | None:
        # As the facilitator's endpoint does: an offer it does not settle is refused, not paid.
        try:
            self.handler.check_requirements(payment, requirements)
        except PaymentRejectedError as exc:
            raise ChannelRefusedError(exc.message, exc.reason) from None
        return self._vouchers.accept(payment, requirements, resource, url=url)

    async def release(self, acceptance: Acceptance) -> None:
        self._vouchers.release(acceptance)

    async def statement(self, channel: bytes) -> dict[str, Any] | None:
        return self._book.statement(channel)

    async def paid_read(self, payer: str, resource: str) -> PaidRead | None:
        # Reads the store when the read left memory: a short SQLite query, as the ledger's;
        # a shared store is a round trip away, off the event loop.
        if self._shared:
            return await to_thread.run_sync(self._book.paid_read, payer, resource)
        return self._book.paid_read(payer, resource)

    def known_payer(self, channel: bytes) -> str | None:
        account = self._book.get(channel)
        return account.payer if account is not None else None
