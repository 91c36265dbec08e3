"""agent-pay's "channel" scheme on EVM: deposit once, one voucher per read, claims in batches.

`ChannelEvmScheme` is the facilitator's `SchemeHandler` for it. It composes the parts, one
module each: the accounts (`accounts`), the fast path a content server calls for every voucher
(`vouchers`), the deposits (`deposits`), and the background parts (`lifecycle`: the watch, the
settler, the store).

- **A read paid by a voucher** (the common case) takes the fast path (`accept`): pure CPU.
- **The first read on a new channel** carries the payer's `ReceiveWithAuthorization` of the
  deposit; `settle` submits `open_with_authorization` once (concurrent first reads of one
  channel share one submission), waits for it, and then accepts the voucher.
- **A top-up** works the same way with `top_up_with_authorization`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Final
from urllib.parse import urlsplit

from agent_pay.chain.channel import ChannelManager
from agent_pay.chain.contract import Transactor
from agent_pay.chain.stablecoin import Stablecoin
from agent_pay.errors import PaymentRejectedError, Reason
from agent_pay.facilitator.base import ChannelTerms, Settlement
from agent_pay.facilitator.channel.accounts import ChannelAccounts
from agent_pay.facilitator.channel.deposits import ChannelDeposits
from agent_pay.facilitator.channel.lifecycle import ChannelBackground
from agent_pay.facilitator.channel.persistence import ChannelPersistence
from agent_pay.facilitator.channel.records import Acceptance, PaidRead
from agent_pay.facilitator.channel.settler import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EVERY_SECONDS,
    DEFAULT_EVERY_VOUCHERS,
    ChannelSettler,
)
from agent_pay.facilitator.channel.store import ChannelStore
from agent_pay.facilitator.channel.vouchers import VoucherAcceptor, unknown_channel
from agent_pay.facilitator.channel.watch import DEFAULT_REFRESH_INTERVAL, ChannelWatch
from agent_pay.protocol import X402_VERSION, PaymentPayload, PaymentRequirements, SupportedKind
from agent_pay.protocol.channel import CHANNEL_SCHEME, ParsedPayload, parse_channel_payload
from agent_pay.protocol.networks import caip2
from agent_pay.signing.voucher_check import VoucherChecker

__all__ = ["DEFAULT_REPLAY_WINDOW", "ChannelEvmScheme", "parse_payload"]

DEFAULT_REPLAY_WINDOW: Final = 300.0
"""Seconds during which the same voucher for the same resource is served again, uncharged."""


def parse_payload(payment: PaymentPayload) -> ParsedPayload:
    """`payment.payload` as a channel payload; MalformedPaymentError if it does not fit."""
    return parse_channel_payload(payment.payload)


def _resource_path(payment: PaymentPayload) -> str:
    return urlsplit(payment.resource.url).path if payment.resource is not None else ""


class ChannelEvmScheme:
    """Verifies and settles "channel" payments on one channel contract.

    Args:
        manager: the channel contract.
        tokens: the stablecoins channels may hold (all on the manager's chain).
        transactor: pays the gas of opens, top-ups and claims.
        store: where channel accounts persist (in memory by default: a restart forgets them;
            on a store shared by several instances, with leases: `ChannelLeases`).
        refresh_interval: seconds between polls of the chain for channel events.
        settle_every_vouchers / settle_every_seconds / settle_batch_size: see
            `ChannelSettler`.
        replay_window: see `DEFAULT_REPLAY_WINDOW`.
        clock: wall time (replay window); chain_clock: what authorization windows are checked
            against (the next block's timestamp by default).
    """

    scheme = CHANNEL_SCHEME

    def __init__(
        self,
        manager: ChannelManager,
        tokens: Iterable[Stablecoin],
        transactor: Transactor,
        *,
        store: ChannelPersistence | None = None,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        settle_every_vouchers: int = DEFAULT_EVERY_VOUCHERS,
        settle_every_seconds: float = DEFAULT_EVERY_SECONDS,
        settle_batch_size: int = DEFAULT_BATCH_SIZE,
        replay_window: float = DEFAULT_REPLAY_WINDOW,
        receipt_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        chain_clock: Callable[[], int] | None = None,
    ) -> None:
        self.manager = manager
        self.chain = manager.chain
        self.network = caip2(self.chain.chain_id)
        self._tokens = {t.address: t for t in tokens}
        self._transactor = transactor
        self.store: ChannelPersistence = store if store is not None else ChannelStore.in_memory()
        self.book = ChannelAccounts(manager, self.store)
        self.accounts = self.book.by_channel
        self.checker = VoucherChecker(manager.domain)
        self.settler = ChannelSettler(
            manager,
            transactor,
            self.accounts,
            checker=self.checker,
            on_change=self.store.mark,
            every_vouchers=settle_every_vouchers,
            every_seconds=settle_every_seconds,
            batch_size=settle_batch_size,
            receipt_timeout=receipt_timeout,
            before_round=self.book.adopt_orphans,
        )
        self.vouchers = VoucherAcceptor(
            self.book,
            self.checker,
            clock=clock,
            replay_window=replay_window,
            on_accepted=self.settler.accepted,
        )
        self.deposits = ChannelDeposits(
            manager,
            self._tokens,
            transactor,
            self.checker,
            remember=self.book.remember,
            on_change=self.store.mark,
            chain_clock=chain_clock or self.chain.next_timestamp,
            receipt_timeout=receipt_timeout,
        )
        self.watch = ChannelWatch(
            manager,
            self.accounts,
            on_change=self.store.mark,
            on_closing=self.settler.urgent,
            interval=refresh_interval,
        )
        self._background = ChannelBackground(self.store, self.watch, self.settler)

    def __repr__(self) -> str:
        return f"ChannelEvmScheme({self.manager.address} on {self.network})"

    @property
    def tokens(self) -> list[Stablecoin]:
        return list(self._tokens.values())

    @property
    def signer_address(self) -> str:
        return self._transactor.address

    @property
    def terms(self) -> ChannelTerms:
        """What a server's channel offers state about this contract."""
        return ChannelTerms(
            network=self.network,
            channel_manager=self.manager.address,
            voucher_domain_name=self.manager.domain.name,
            voucher_domain_version=self.manager.domain.version,
            grace_period=self.manager.grace_period,
        )

    def supported_kind(self) -> SupportedKind:
        return SupportedKind(
            x402_version=X402_VERSION,
            scheme=CHANNEL_SCHEME,
            network=self.network,
            extra=self.terms.to_extra(),
        )

    # -- lifecycle (see `ChannelBackground`)

    def start(self) -> None:
        """Start the background parts: the store's writer, the chain watch, the settler."""
        self._background.start()

    def close(self) -> None:
        """Stop watching, claim everything still due (one last round), write the store.
        Idempotent; the handler cannot be started again."""
        self._background.close()

    # -- the fast path (see `VoucherAcceptor`) and what the server asks of channels

    def accept(
        self,
        payment: PaymentPayload,
        requirements: PaymentRequirements,
        resource: str,
        *,
        parsed: ParsedPayload | None = None,
        url: str | None = None,
    ) -> Acceptance | None:
        """See `VoucherAcceptor.accept`."""
        return self.vouchers.accept(payment, requirements, resource, parsed=parsed, url=url)

    def release(self, acceptance: Acceptance) -> None:
        """See `VoucherAcceptor.release`."""
        self.vouchers.release(acceptance)

    def paid_read(self, payer: str, resource: str) -> PaidRead | None:
        """See `ChannelAccounts.paid_read`."""
        return self.book.paid_read(payer, resource)

    def statement(self, channel: bytes) -> dict[str, Any] | None:
        """Where `channel` stands (the wire's `ChannelStatement`), or None if unknown here."""
        return self.book.statement(channel)

    # -- SchemeHandler

    def verify(self, payment: PaymentPayload, requirements: PaymentRequirements) -> str:
        """Check that `payment` would settle now; return the payer. Changes nothing (it may
        read the chain, and remember a channel it read; on a shared store, take its lease)."""
        self.check_requirements(payment, requirements)
        payload = parse_payload(payment)
        channel = bytes.fromhex(payload.channel_id[2:])
        vet = partial(self.vouchers.vet, payload, requirements)  # before taking its lease
        account = self.book.lookup(channel, vet)
        if account is None:
            if payload.open is None:
                raise unknown_channel(channel, self.manager.address)
            try:
                return self.deposits.verify_open(payload, requirements, channel)
            except PaymentRejectedError:
                # A concurrent read carrying the same deposit may have opened the channel
                # since we looked (its balance and nonce are spent now): if so, this read is
                # a voucher on an open channel.
                account = self.book.lookup(channel, vet)
                if account is None:
                    raise
        self.vouchers.check_terms(account, requirements)
        signature = bytes.fromhex(payload.signature[2:])
        self.vouchers.check_signer(account, payload.cumulative_amount, signature)
        if payload.top_up is not None:
            self.deposits.verify_top_up(account, payload.top_up, requirements)
            return account.payer
        account.check(
            payload.cumulative_amount, requirements.amount, signature, _resource_path(payment)
        )
        return account.payer

    def settle(self, payment: PaymentPayload, requirements: PaymentRequirements) -> Settlement:
        """Settle `payment`: submit its deposit or top-up if it carries one (once, however
        often it is asked), then accept its voucher. Blocking; run it in a worker thread.

        Raises PaymentRejectedError / ChannelRefusedError (nothing happened),
        SettlementFailedError (the deposit transaction failed: nothing was charged),
        ChainUnavailableError (the node; asking again is safe).
        """
        self.check_requirements(payment, requirements)
        payload = parse_payload(payment)
        channel = bytes.fromhex(payload.channel_id[2:])
        transaction = ""
        account = self.book.lookup(channel, partial(self.vouchers.vet, payload, requirements))
        if account is None:
            if payload.open is None:
                raise unknown_channel(channel, self.manager.address)
            transaction = self.deposits.open_once(channel, payload, requirements)
            account = self.accounts[channel]
        if payload.top_up is not None:
            self.vouchers.check_terms(account, requirements)
            self.deposits.verify_top_up(account, payload.top_up, requirements)
            transaction = self.deposits.top_up(account, payload.top_up)
        url = payment.resource.url if payment.resource is not None else None
        acceptance = self.vouchers.accept_on(
            account, payload, requirements, _resource_path(payment), url
        )
        block = None
        if transaction:
            receipt = self.chain.get_receipt(bytes.fromhex(transaction[2:]))
            block = receipt.block_number if receipt is not None else None
        return Settlement(
            payer=account.payer,
            transaction=transaction,
            amount=acceptance.price,
            block_number=block,
        )

    def check_requirements(
        self, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> None:
        """PaymentRejectedError unless `requirements` is a channel offer on this contract, in a
        token settled here, and `payment` accepted it verbatim."""
        if requirements.scheme != CHANNEL_SCHEME:
            raise PaymentRejectedError(
                f"this handler settles scheme {CHANNEL_SCHEME!r} only", Reason.UNSUPPORTED_SCHEME
            )
        if requirements.network != self.network:
            raise PaymentRejectedError(
                f"this handler settles on {self.network} only", Reason.NETWORK_MISMATCH
            )
        if payment.accepted != requirements:
            raise PaymentRejectedError(
                "accepted requirements differ from what was offered", Reason.REQUIREMENTS_MISMATCH
            )
        manager = requirements.extra.get("channelManager")
        if not isinstance(manager, str) or manager.lower() != self.manager.address.lower():
            raise PaymentRejectedError(
                f"channels are settled on {self.manager.address} here",
                Reason.REQUIREMENTS_MISMATCH,
            )
        if requirements.asset not in self._tokens:
            raise PaymentRejectedError(
                f"asset {requirements.asset} is not settled here", Reason.ASSET_MISMATCH
            )
