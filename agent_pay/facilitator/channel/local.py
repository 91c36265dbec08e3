"""The in-process `ChannelFacilitator`: the content server's channel seam on a `ChannelEvmScheme`
in the same process. Every call is pure CPU on the event loop, as the fast path needs (the
methods are coroutines only to share the seam with the remote one). On a shared store, what
reads the store runs off the loop: a paid read's look-up, a statement of a channel held
elsewhere, and the lease taken on the first voucher for a channel this instance does not
hold."""

from __future__ import annotations

from functools import partial
from typing import Any

from anyio import to_thread

from agent_pay.errors import ChainUnavailableError, PaymentRejectedError, Reason
from agent_pay.facilitator.base import ChannelTerms
from agent_pay.facilitator.channel.persistence import ChannelLeases
from agent_pay.facilitator.channel.records import Acceptance, ChannelRefusedError, PaidRead
from agent_pay.facilitator.channel.scheme import ChannelEvmScheme
from agent_pay.protocol import PaymentPayload, PaymentRequirements
from agent_pay.protocol.channel import parse_channel_payload
from agent_pay.store.errors import StoreUnavailableError

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
        parsed = parse_channel_payload(payment.payload)
        acceptance = self._vouchers.accept(payment, requirements, resource, parsed=parsed, url=url)
        if acceptance is not None or not self._shared or parsed.top_up is not None:
            return acceptance
        # On a shared store, a channel this instance does not hold: take its lease (a round
        # trip, off the loop) and decide the voucher here, as the instance holding it would.
        # (Through the ledger instead, a voucher another instance served would be refused
        # here as delivered, where one instance serves it again as a replay.)
        channel = bytes.fromhex(parsed.channel_id[2:])
        try:
            vet = partial(self._vouchers.vet, parsed, requirements)
            account = await to_thread.run_sync(self._book.lookup, channel, vet)
        except StoreUnavailableError as exc:
            raise _store_down(exc) from None
        if account is None:  # no such channel yet: the payment opens it, through the ledger
            return None
        return self._vouchers.accept(payment, requirements, resource, parsed=parsed, url=url)

    async def release(self, acceptance: Acceptance) -> None:
        self._vouchers.release(acceptance)

    async def statement(self, channel: bytes) -> dict[str, Any] | None:
        if not self._shared:
            return self._book.statement(channel)
        try:  # may read the store: off the event loop
            return await to_thread.run_sync(self._book.statement, channel)
        except StoreUnavailableError as exc:  # unknown is not "no such channel": a 503
            raise _store_down(exc) from None

    async def paid_read(self, payer: str, resource: str) -> PaidRead | None:
        # Reads the store when the read left memory: a short SQLite query, as the ledger's;
        # a shared store is a round trip away, off the event loop.
        if self._shared:
            return await to_thread.run_sync(self._book.paid_read, payer, resource)
        return self._book.paid_read(payer, resource)

    def known_payer(self, channel: bytes) -> str | None:
        account = self._book.get(channel)
        return account.payer if account is not None else None


def _store_down(exc: StoreUnavailableError) -> ChainUnavailableError:
    """The shared store could not be read: a 503 `ledger_unavailable` (retry)."""
    return ChainUnavailableError(
        f"the channel store is unavailable: {exc}", Reason.LEDGER_UNAVAILABLE
    )
