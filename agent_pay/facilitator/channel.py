"""agent-pay's "channel" scheme on EVM: deposit once, one voucher per read, claims in batches.

`ChannelEvmScheme` is the facilitator's `SchemeHandler` for it, plus the in-process fast path a
content server calls for every voucher (`accept`):

- **A read paid by a voucher** (the common case) is pure CPU: parse, one signature recovery
  (`VoucherChecker`), the acceptance rule under the channel's lock (`ChannelAccount.accept`,
  which also notes the read the voucher paid for: the payer's entitlement to read it again,
  `paid_read`), mark the channel dirty for the write-behind store. No chain read, no thread
  hop, no transaction. `accept` returns None when the payment needs the chain (a new channel's
  deposit, a top-up, a channel this server has not seen): the server then takes the ordinary
  verify/settle path, which runs in a worker thread.
- **The first read on a new channel** carries the payer's `ReceiveWithAuthorization` of the
  deposit; `settle` submits `open_with_authorization` once (concurrent first reads of one
  channel share one submission), waits for it, and then accepts the voucher.
- **A top-up** works the same way with `top_up_with_authorization`.

Around it run three background parts, started by `start()` and stopped, in order, by
`close()`: the `ChannelWatch` (the cached on-chain view), the `ChannelSettler` (claims, with a
last round on close) and the `ChannelStore` (the write-behind file, flushed on close).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final
from urllib.parse import urlsplit

from agent_pay.chain.base import ChainError
from agent_pay.chain.channel import ChannelManager, ChannelState, ChannelStatus
from agent_pay.chain.contract import Transactor
from agent_pay.chain.stablecoin import Stablecoin
from agent_pay.errors import ChainUnavailableError, PaymentRejectedError, Reason
from agent_pay.facilitator.base import Settlement
from agent_pay.facilitator.channel_book import (
    Acceptance,
    ChannelAccount,
    ChannelRefusedError,
    PaidRead,
)
from agent_pay.facilitator.channel_deposits import ChannelDeposits
from agent_pay.facilitator.channel_settler import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EVERY_SECONDS,
    DEFAULT_EVERY_VOUCHERS,
    ChannelSettler,
)
from agent_pay.facilitator.channel_store import ChannelStore
from agent_pay.facilitator.channel_view import DEFAULT_REFRESH_INTERVAL, ChannelWatch
from agent_pay.protocol import X402_VERSION, PaymentPayload, PaymentRequirements, SupportedKind
from agent_pay.protocol.channel import CHANNEL_SCHEME, ParsedPayload, parse_channel_payload
from agent_pay.protocol.networks import caip2
from agent_pay.signing.voucher_check import VoucherChecker

__all__ = ["DEFAULT_REPLAY_WINDOW", "ChannelEvmScheme", "parse_payload"]

log = logging.getLogger(__name__)

_TROUBLE = (ChainError, OSError, TimeoutError)

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
        store: where channel accounts persist (in memory by default: a restart forgets them).
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
        store: ChannelStore | None = None,
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
        self.store = store if store is not None else ChannelStore.in_memory()
        self.accounts: dict[bytes, ChannelAccount] = {a.channel_id: a for a in self.store.load()}
        self._by_payer: dict[str, list[ChannelAccount]] = {}
        for account in self.accounts.values():
            self._by_payer.setdefault(account.payer, []).append(account)
        self.checker = VoucherChecker(manager.domain)
        self.replay_window = replay_window
        self._receipt_timeout = receipt_timeout
        self._clock = clock
        self._chain_clock = chain_clock or self.chain.next_timestamp
        self._lock = threading.Lock()  # guards `accounts` inserts
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
        )
        self.deposits = ChannelDeposits(
            manager,
            self._tokens,
            transactor,
            self.checker,
            remember=self._remember,
            on_change=self.store.mark,
            chain_clock=self._chain_clock,
            receipt_timeout=receipt_timeout,
        )
        self.watch = ChannelWatch(
            manager,
            self.accounts,
            on_change=self.store.mark,
            on_closing=self.settler.urgent,
            interval=refresh_interval,
        )
        self._started = False
        self._closed = False

    def __repr__(self) -> str:
        return f"ChannelEvmScheme({self.manager.address} on {self.network})"

    @property
    def tokens(self) -> list[Stablecoin]:
        return list(self._tokens.values())

    @property
    def signer_address(self) -> str:
        return self._transactor.address

    def supported_kind(self) -> SupportedKind:
        return SupportedKind(
            x402_version=X402_VERSION,
            scheme=CHANNEL_SCHEME,
            network=self.network,
            extra={"channelManager": self.manager.address},
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background parts: the store's writer, the chain watch, the settler."""
        if self._started:
            return
        self._started = True
        self.store.start()
        try:
            self.watch.poll()  # sets the log cursor; a failure here is retried by the thread
        except _TROUBLE as exc:
            log.warning("channel watch: first poll failed (%s)", exc)
        self.watch.start()
        self.settler.start()

    def close(self) -> None:
        """Stop watching, claim everything still due (one last round), write the store.
        Idempotent; the handler cannot be started again."""
        if self._closed:
            return
        self._closed = True
        self.watch.close()
        self.settler.close(final_round=True)
        self.store.close()

    # -- the fast path -------------------------------------------------------------------------

    def accept(
        self,
        payment: PaymentPayload,
        requirements: PaymentRequirements,
        resource: str,
        *,
        parsed: ParsedPayload | None = None,
        url: str | None = None,
    ) -> Acceptance | None:
        """Pay one read of `resource` (a URL path; `url` as sold, for a re-read's receipt) with
        the voucher in `payment`, which accepted `requirements` (an offer this server made): pure
        CPU, no chain, no wait. The read entitles the payer to `resource` (`paid_read`).

        `parsed` is `payment`'s payload if the caller parsed it already. Returns None when the
        payment needs the chain first (a deposit or top-up to submit, or
        a channel not seen yet): use `verify` / `settle`. Raises ChannelRefusedError (402,
        with the channel's statement when the voucher is the payer's) or MalformedPaymentError.
        """
        payload = parsed if parsed is not None else parse_payload(payment)
        if payload.top_up is not None:
            return None
        account = self.accounts.get(bytes.fromhex(payload.channel_id[2:]))
        if account is None:
            return None
        # An `open` for a channel that is open already is ignored: a client attaches it to
        # every read until it hears that the channel is open.
        return self._accept(account, payload, requirements, resource, url)

    def release(self, acceptance: Acceptance) -> None:
        """Undo `acceptance`: its read could not be served (the content failed). The voucher
        stays valid for the same read: its slice becomes unpaid again."""
        if acceptance.replayed:
            return
        account = self.accounts.get(acceptance.channel_id)
        if account is not None:
            account.release(acceptance.cumulative_amount, acceptance.price)
            self.store.mark(account)

    def paid_read(self, payer: str, resource: str) -> PaidRead | None:
        """A read of `resource` (a URL path) that `payer` paid by voucher, if any: its
        entitlement to read it again. Survives a restart as the voucher that paid does."""
        # The accounts first: a read leaves them only once the store has it on disk.
        for account in self._by_payer.get(payer, ()):
            read = account.unwritten_read(resource)
            if read is not None:
                return read
        found = self.store.paid_read(payer, resource)
        if found is None:
            return None
        channel, cumulative, url, price, at = found
        terms = self.accounts.get(channel)
        if terms is None:  # pragma: no cover - every stored read's channel is loaded
            return None
        return PaidRead(
            channel, cumulative, terms.payer, terms.payee, terms.token, resource, url, price, at
        )

    def statement(self, channel: bytes) -> dict[str, Any] | None:
        """Where `channel` stands (the wire's `ChannelStatement`), or None if unknown here."""
        account = self.accounts.get(channel)
        return account.statement() if account is not None else None

    def _accept(
        self,
        account: ChannelAccount,
        payload: ParsedPayload,
        requirements: PaymentRequirements,
        resource: str,
        url: str | None = None,
    ) -> Acceptance:
        self._check_terms(account, requirements)
        signature = bytes.fromhex(payload.signature[2:])
        self._check_voucher_signer(account, payload.cumulative_amount, signature)
        acceptance = account.accept(
            payload.cumulative_amount,
            requirements.amount,
            signature,
            resource=resource,
            now=self._clock(),
            replay_window=self.replay_window,
            url=url,
        )
        if not acceptance.replayed:
            self.store.mark(account)
            self.settler.accepted()
        return acceptance

    def _check_terms(self, account: ChannelAccount, requirements: PaymentRequirements) -> None:
        if account.payee != requirements.pay_to:
            raise ChannelRefusedError(
                f"this channel pays {account.payee}, not {requirements.pay_to}: open a channel "
                "to this payee",
                Reason.CHANNEL_PAYEE_MISMATCH,
            )
        if account.token != requirements.asset:
            raise ChannelRefusedError(
                f"this channel holds {account.token}, not {requirements.asset}",
                Reason.CHANNEL_ASSET_MISMATCH,
            )

    def _check_voucher_signer(
        self, account: ChannelAccount, cumulative: int, signature: bytes
    ) -> None:
        try:
            signer = self.checker.signer_of(
                account.channel_id, cumulative, signature, account.signers
            )
        except ValueError as exc:
            raise ChannelRefusedError(
                f"malformed voucher signature: {exc}", Reason.CHANNEL_INVALID_SIGNATURE
            ) from None
        if signer is None:
            raise ChannelRefusedError(
                "the voucher is not signed by the channel's payer or signer (another key, or "
                f"signed for another chain or channel contract than {self.manager.address})",
                Reason.CHANNEL_INVALID_SIGNATURE,
            )

    # -- SchemeHandler: verify -----------------------------------------------------------------

    def verify(self, payment: PaymentPayload, requirements: PaymentRequirements) -> str:
        """Check that `payment` would settle now; return the payer. Changes nothing (it may
        read the chain, and remember a channel it read)."""
        self._check_requirements(payment, requirements)
        payload = parse_payload(payment)
        channel = bytes.fromhex(payload.channel_id[2:])
        account = self.accounts.get(channel) or self._lookup(channel)
        if account is None:
            if payload.open is None:
                raise _unknown(channel, self.manager.address)
            try:
                return self.deposits.verify_open(payload, requirements, channel)
            except PaymentRejectedError:
                # A concurrent read carrying the same deposit may have opened the channel
                # since we looked (its balance and nonce are spent now): if so, this read is
                # a voucher on an open channel.
                account = self._lookup(channel)
                if account is None:
                    raise
        self._check_terms(account, requirements)
        signature = bytes.fromhex(payload.signature[2:])
        self._check_voucher_signer(account, payload.cumulative_amount, signature)
        if payload.top_up is not None:
            self.deposits.verify_top_up(account, payload.top_up, requirements)
            return account.payer
        account.check(
            payload.cumulative_amount, requirements.amount, signature, _resource_path(payment)
        )
        return account.payer

    def _check_requirements(
        self, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> None:
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

    def _lookup(self, channel: bytes) -> ChannelAccount | None:
        """The account of a channel this server has not seen, read from the chain; None if
        there is no such channel."""
        try:
            state = self.manager.channel(channel)
        except _TROUBLE as exc:
            raise ChainUnavailableError(f"cannot read the channel: {exc}") from exc
        if state.status is ChannelStatus.NONE:
            return None
        return self._remember(channel, state)

    def _remember(self, channel: bytes, state: ChannelState) -> ChannelAccount:
        with self._lock:
            account = self.accounts.get(channel)
            if account is None:
                account = self.accounts[channel] = ChannelAccount.from_chain(channel, state)
                self._by_payer.setdefault(account.payer, []).append(account)
        account.refresh(state)
        self.store.mark(account)
        return account

    # -- SchemeHandler: settle -----------------------------------------------------------------

    def settle(self, payment: PaymentPayload, requirements: PaymentRequirements) -> Settlement:
        """Settle `payment`: submit its deposit or top-up if it carries one (once, however
        often it is asked), then accept its voucher. Blocking; run it in a worker thread.

        Raises PaymentRejectedError / ChannelRefusedError (nothing happened),
        SettlementFailedError (the deposit transaction failed: nothing was charged),
        ChainUnavailableError (the node; asking again is safe).
        """
        self._check_requirements(payment, requirements)
        payload = parse_payload(payment)
        channel = bytes.fromhex(payload.channel_id[2:])
        transaction = ""
        account = self.accounts.get(channel) or self._lookup(channel)
        if account is None:
            if payload.open is None:
                raise _unknown(channel, self.manager.address)
            transaction = self.deposits.open_once(channel, payload, requirements)
            account = self.accounts[channel]
        if payload.top_up is not None:
            self._check_terms(account, requirements)
            self.deposits.verify_top_up(account, payload.top_up, requirements)
            transaction = self.deposits.top_up(account, payload.top_up)
        url = payment.resource.url if payment.resource is not None else None
        acceptance = self._accept(account, payload, requirements, _resource_path(payment), url)
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


def _unknown(channel: bytes, manager: str) -> ChannelRefusedError:
    return ChannelRefusedError(
        f"no channel 0x{channel.hex()} on {manager}: open one first", Reason.CHANNEL_UNKNOWN
    )
