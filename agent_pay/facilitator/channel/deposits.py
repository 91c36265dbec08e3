"""A channel's deposits: checking and submitting the payer's gasless open and top-ups.

The first read on a new channel carries the payer's EIP-3009 `ReceiveWithAuthorization` of the
deposit to the channel contract; `ChannelDeposits` checks everything the contract and the token
will check (the channel id derives from the payer, payee, token and salt here; the nonce commits
to the channel and the voucher signer; the signature, the time window, the balance, the least
deposit) and then submits `open_with_authorization` once, however many reads carry it:
concurrent first reads of one channel wait for the one that submits and share its outcome. A
top-up goes the same way with `top_up_with_authorization`. Blocking: the handler runs it in
worker threads, never on the hot path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Final

from agent_pay.chain.base import ChainError, Receipt, TransactionRejectedError
from agent_pay.chain.channel import ChannelManager, ChannelState, ChannelStatus
from agent_pay.chain.contract import Transactor
from agent_pay.chain.stablecoin import Stablecoin
from agent_pay.errors import (
    ChainUnavailableError,
    PaymentRejectedError,
    Reason,
    SettlementFailedError,
)
from agent_pay.facilitator.channel.book import ChannelAccount, ChannelRefusedError
from agent_pay.protocol import PaymentRequirements
from agent_pay.protocol.channel import ChannelOpen, ChannelTopUp, ParsedPayload
from agent_pay.signing import (
    TokenDomain,
    TransferAuthorization,
    receive_with_authorization_typed_data,
    recover_typed_data_signer,
)
from agent_pay.signing.voucher import channel_id as derive_channel_id
from agent_pay.signing.voucher import open_nonce, top_up_nonce
from agent_pay.signing.voucher_check import VoucherChecker

__all__ = ["OPEN_GAS", "TOP_UP_GAS", "VALIDITY_MARGIN", "ChannelDeposits"]

log = logging.getLogger(__name__)

OPEN_GAS: Final = 250_000  # measured 161.8k (see contracts/README.md)
TOP_UP_GAS: Final = 150_000
VALIDITY_MARGIN: Final = 6  # an authorization must stay valid this long: it needs a block
_TROUBLE = (ChainError, OSError, TimeoutError)

# Revert strings of the token and the channel contract, as reasons a client can act on.
_OPEN_REVERTS: Final = {
    "authorization is expired": Reason.VALID_BEFORE_EXPIRED,
    "authorization is not yet valid": Reason.VALID_AFTER_FUTURE,
    "authorization is used or canceled": Reason.NONCE_ALREADY_USED,
    "invalid signature": Reason.CHANNEL_INVALID_OPEN,
    "transfer amount exceeds balance": Reason.INSUFFICIENT_BALANCE,
    "close requested": Reason.CHANNEL_CLOSED,
    "channel is closed": Reason.CHANNEL_CLOSED,
}


class ChannelDeposits:
    """Checks and submits deposits to `manager` from `transactor`'s account (which pays the
    gas). `remember` makes the handler hold a channel read from the chain; `on_change` tells it
    an account changed."""

    def __init__(
        self,
        manager: ChannelManager,
        tokens: Mapping[str, Stablecoin],
        transactor: Transactor,
        checker: VoucherChecker,
        *,
        remember: Callable[[bytes, ChannelState], ChannelAccount],
        on_change: Callable[[ChannelAccount], None],
        chain_clock: Callable[[], int],
        receipt_timeout: float = 30.0,
    ) -> None:
        self.manager = manager
        self.chain = manager.chain
        self.tokens = tokens
        self.transactor = transactor
        self.checker = checker
        self.remember = remember
        self.on_change = on_change
        self.chain_clock = chain_clock
        self.receipt_timeout = receipt_timeout
        self._lock = threading.Lock()
        self._opening: dict[bytes, Future[str]] = {}
        self._topping: dict[bytes, Future[str]] = {}  # by authorization nonce

    def verify_open(
        self, payload: ParsedPayload, requirements: PaymentRequirements, channel: bytes
    ) -> str:
        """Everything about a new channel's deposit and its first voucher, before any
        transaction: returns the payer."""
        opening = payload.open
        assert opening is not None
        auth = TransferAuthorization.from_wire(opening.authorization)
        token = self.tokens[requirements.asset]
        if auth.to != self.manager.address:
            raise PaymentRejectedError(
                f"the deposit must be authorized to the channel contract {self.manager.address}",
                Reason.CHANNEL_INVALID_OPEN,
            )
        salt = bytes.fromhex(opening.salt[2:])
        expected = derive_channel_id(
            auth.from_,
            requirements.pay_to,
            requirements.asset,
            salt,
            manager=self.manager.address,
            chain_id=self.chain.chain_id,
        )
        if expected != channel:
            raise PaymentRejectedError(
                "channelId is not the channel of this payer, payee, token and salt here "
                "(another payee, token, channel contract or chain?)",
                Reason.CHANNEL_INVALID_OPEN,
            )
        if auth.nonce != open_nonce(channel, opening.signer):
            raise PaymentRejectedError(
                "the deposit authorization's nonce does not commit to this channel",
                Reason.CHANNEL_INVALID_OPEN,
            )
        min_deposit = _min_deposit(requirements)
        if auth.value < max(min_deposit, 1):
            raise PaymentRejectedError(
                f"a deposit of {auth.value} is below the minimum of {min_deposit}",
                Reason.CHANNEL_DEPOSIT_TOO_SMALL,
            )
        self._check_authorization(token, auth, opening)
        signature = bytes.fromhex(payload.signature[2:])
        try:
            signer = self.checker.recover_checksum(channel, payload.cumulative_amount, signature)
        except ValueError as exc:
            raise PaymentRejectedError(
                f"malformed voucher signature: {exc}", Reason.CHANNEL_INVALID_SIGNATURE
            ) from None
        if signer not in (auth.from_, opening.signer):
            raise PaymentRejectedError(
                "the first voucher is not signed by the payer or the channel's signer",
                Reason.CHANNEL_INVALID_SIGNATURE,
            )
        if payload.cumulative_amount > auth.value:
            raise PaymentRejectedError(
                f"the voucher's {payload.cumulative_amount} exceeds the deposit of {auth.value}",
                Reason.CHANNEL_OVER_DEPOSIT,
            )
        if payload.cumulative_amount < requirements.amount:
            raise PaymentRejectedError(
                f"the voucher's {payload.cumulative_amount} does not cover the price "
                f"{requirements.amount}",
                Reason.CHANNEL_AMOUNT_NOT_INCREASING,
            )
        return auth.from_

    def _check_authorization(
        self, token: Stablecoin, auth: TransferAuthorization, signed: ChannelOpen | ChannelTopUp
    ) -> None:
        """The deposit authorization's signature, time window and the payer's balance."""
        asset = token.asset
        domain = TokenDomain(asset.eip712_name, asset.eip712_version, asset.chain_id, asset.address)
        signature = bytes.fromhex(signed.signature[2:])
        try:
            signer = recover_typed_data_signer(
                receive_with_authorization_typed_data(domain, auth), signature
            )
        except ValueError as exc:
            raise PaymentRejectedError(
                f"bad deposit signature: {exc}", Reason.CHANNEL_INVALID_OPEN
            ) from None
        if signer != auth.from_:
            raise PaymentRejectedError(
                "the deposit authorization is not signed by its payer",
                Reason.CHANNEL_INVALID_OPEN,
            )
        try:
            now = self.chain_clock()
            balance = token.balance_of(auth.from_)
        except _TROUBLE as exc:
            raise ChainUnavailableError(f"cannot read the chain: {exc}") from exc
        if auth.valid_after >= now:
            raise PaymentRejectedError(
                f"the deposit authorization is not valid before {auth.valid_after}",
                Reason.VALID_AFTER_FUTURE,
            )
        if auth.valid_before <= now + VALIDITY_MARGIN:
            raise PaymentRejectedError(
                f"the deposit authorization expires at {auth.valid_before}, too soon",
                Reason.VALID_BEFORE_EXPIRED,
            )
        if balance < auth.value:
            raise PaymentRejectedError(
                f"the payer holds {asset.format(balance)}, the deposit is "
                f"{asset.format(auth.value)}",
                Reason.INSUFFICIENT_BALANCE,
            )

    def verify_top_up(
        self, account: ChannelAccount, top_up: ChannelTopUp, requirements: PaymentRequirements
    ) -> None:
        auth = TransferAuthorization.from_wire(top_up.authorization)
        if auth.to != self.manager.address or auth.from_ != account.payer:
            raise PaymentRejectedError(
                "a top-up must be authorized by the channel's payer to the channel contract",
                Reason.CHANNEL_INVALID_OPEN,
            )
        if auth.nonce != top_up_nonce(account.channel_id, bytes.fromhex(top_up.salt[2:])):
            raise PaymentRejectedError(
                "the top-up authorization's nonce does not commit to this channel",
                Reason.CHANNEL_INVALID_OPEN,
            )
        if not account.live:
            raise ChannelRefusedError(
                "this channel is closing or closed: it cannot be topped up",
                Reason.CHANNEL_CLOSED,
                account.statement(),
            )
        token = self.tokens[requirements.asset]
        try:
            used = token.authorization_state(auth.from_, auth.nonce)
        except _TROUBLE as exc:
            raise ChainUnavailableError(f"cannot read the chain: {exc}") from exc
        if used:
            # Submitted already (a concurrent read carried the same top-up, or this one is a
            # retry): the money is in the channel, and the payer's balance and the window no
            # longer matter. Settling refreshes the channel and checks the voucher against it.
            return
        self._check_authorization(token, auth, top_up)

    def open_once(
        self, channel: bytes, payload: ParsedPayload, requirements: PaymentRequirements
    ) -> str:
        """Check and open `channel` with `payload`'s deposit, or wait for the request already
        opening it (and share its outcome); the opening transaction's hash, or "" when the
        channel was found open."""
        return self._once(
            self._opening,
            channel,
            lambda: self._open(channel, payload, requirements),
            "the channel is still being opened",
        )

    def _once(
        self, flights: dict[bytes, Future[str]], key: bytes, work: Callable[[], str], busy: str
    ) -> str:
        """Run `work` unless a request is running it for `key` already: then wait for that one
        and share its outcome ("" for the transaction: that request reports it)."""
        with self._lock:
            flight = flights.get(key)
            owner = flight is None
            if flight is None:
                flight = flights[key] = Future()
        if not owner:
            try:
                flight.result(timeout=self.receipt_timeout + 5)
            except TimeoutError as exc:
                raise ChainUnavailableError(busy) from exc
            return ""
        try:
            transaction = work()
        except BaseException as exc:
            flight.set_exception(exc)
            raise
        else:
            flight.set_result(transaction)
            return transaction
        finally:
            with self._lock:
                del flights[key]
            if flight.done() and not flight.cancelled():
                flight.exception()  # retrieved: nobody may be waiting

    def _open(
        self, channel: bytes, payload: ParsedPayload, requirements: PaymentRequirements
    ) -> str:
        # Only one request opens a channel at a time (`open_once`), so a channel found closed
        # here stays so until we open it: checked first, its deposit's balance and nonce are
        # not those of an opening that just went through (which would refuse a read the open
        # paid for).
        try:
            existing = self.manager.channel(channel)
        except _TROUBLE as exc:
            raise ChainUnavailableError(f"cannot read the chain: {exc}") from exc
        if existing.status is not ChannelStatus.NONE:
            self.remember(channel, existing)  # opened already (by an earlier attempt)
            return ""
        self.verify_open(payload, requirements, channel)
        opening = payload.open
        assert opening is not None
        auth = TransferAuthorization.from_wire(opening.authorization)
        data = self.manager.open_with_authorization_data(
            auth,
            bytes.fromhex(opening.signature[2:]),
            payee=requirements.pay_to,
            token=requirements.asset,
            salt=bytes.fromhex(opening.salt[2:]),
            signer=opening.signer,
        )
        receipt = self._transact(data, OPEN_GAS, "open")
        try:
            state = self.manager.channel(channel)
        except _TROUBLE as exc:
            raise ChainUnavailableError(f"cannot read the chain: {exc}") from exc
        if not receipt.status:
            if state.status is not ChannelStatus.NONE:  # someone else opened it first
                self.remember(channel, state)
                return ""
            reason = _revert_reason(receipt.revert_reason)
            raise SettlementFailedError(
                f"opening the channel reverted: {receipt.revert_reason}", reason
            )
        self.remember(channel, state)
        log.info("opened channel 0x%s for %s", channel.hex(), auth.from_)
        return receipt.tx_hash_hex

    def top_up(self, account: ChannelAccount, top_up: ChannelTopUp) -> str:
        """Submit `top_up` (checked by `verify_top_up`) unless it went in already, or wait for
        the request submitting it; the transaction's hash, or "" when there was none to send.
        Concurrent reads carrying the same top-up share one transaction."""
        nonce = TransferAuthorization.from_wire(top_up.authorization).nonce
        return self._once(
            self._topping,
            nonce,
            lambda: self._top_up(account, top_up),
            "the channel is still being topped up",
        )

    def _top_up(self, account: ChannelAccount, top_up: ChannelTopUp) -> str:
        auth = TransferAuthorization.from_wire(top_up.authorization)
        token = self.tokens[account.token]
        try:
            used = token.authorization_state(auth.from_, auth.nonce)
        except _TROUBLE as exc:
            raise ChainUnavailableError(f"cannot read the chain: {exc}") from exc
        transaction = ""
        if not used:
            data = self.manager.top_up_with_authorization_data(
                account.channel_id,
                auth,
                bytes.fromhex(top_up.signature[2:]),
                salt=bytes.fromhex(top_up.salt[2:]),
            )
            receipt = self._transact(data, TOP_UP_GAS, "top up")
            if not receipt.status and not token.authorization_state(auth.from_, auth.nonce):
                raise SettlementFailedError(
                    f"the top-up reverted: {receipt.revert_reason}",
                    _revert_reason(receipt.revert_reason),
                )
            transaction = receipt.tx_hash_hex if receipt.status else ""
        try:
            account.refresh(self.manager.channel(account.channel_id))
        except _TROUBLE as exc:
            raise ChainUnavailableError(f"cannot read the chain: {exc}") from exc
        self.on_change(account)
        return transaction

    def _transact(self, data: bytes, gas: int, what: str) -> Receipt:
        try:
            tx_hash = self.transactor.send(self.manager.address, data, gas=gas)
            return self.chain.wait_for_receipt(tx_hash, self.receipt_timeout)
        except TransactionRejectedError as exc:
            raise ChainUnavailableError(f"the node refused the {what}: {exc}") from exc
        except _TROUBLE as exc:
            raise ChainUnavailableError(f"the {what} was not confirmed: {exc}") from exc


def _min_deposit(requirements: PaymentRequirements) -> int:
    raw = requirements.extra.get("minDeposit", "0")
    try:
        return int(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else 0
    except ValueError:
        return 0


def _revert_reason(message: str | None) -> Reason:
    text = (message or "").lower()
    for fragment, reason in _OPEN_REVERTS.items():
        if fragment in text:
            return reason
    return Reason.TRANSACTION_FAILED
