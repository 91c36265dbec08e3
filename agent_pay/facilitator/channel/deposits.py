"""A channel's deposits: submitting the payer's gasless open and top-ups.

The first read on a new channel carries the payer's EIP-3009 `ReceiveWithAuthorization` of the
deposit to the channel contract; `ChannelDeposits` checks it (`DepositChecks`: everything the
contract and the token will check) and then submits `open_with_authorization` once, however
many reads carry it:
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
    Reason,
    SettlementFailedError,
)
from agent_pay.facilitator.channel.book import ChannelAccount
from agent_pay.facilitator.channel.deposit_checks import DepositChecks
from agent_pay.protocol import PaymentRequirements
from agent_pay.protocol.channel import ChannelTopUp, ParsedPayload
from agent_pay.signing import (
    TransferAuthorization,
)
from agent_pay.signing.voucher_check import VoucherChecker

__all__ = ["OPEN_GAS", "TOP_UP_GAS", "ChannelDeposits"]

log = logging.getLogger(__name__)

OPEN_GAS: Final = 250_000  # measured 161.8k (see contracts/README.md)
TOP_UP_GAS: Final = 150_000
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
        self.checks = DepositChecks(manager, tokens, checker, chain_clock=chain_clock)
        self.remember = remember
        self.on_change = on_change
        self.receipt_timeout = receipt_timeout
        self._lock = threading.Lock()
        self._opening: dict[bytes, Future[str]] = {}
        self._topping: dict[bytes, Future[str]] = {}  # by authorization nonce

    def verify_open(
        self, payload: ParsedPayload, requirements: PaymentRequirements, channel: bytes
    ) -> str:
        """See `DepositChecks.verify_open`."""
        return self.checks.verify_open(payload, requirements, channel)

    def verify_top_up(
        self, account: ChannelAccount, top_up: ChannelTopUp, requirements: PaymentRequirements
    ) -> None:
        """See `DepositChecks.verify_top_up`."""
        self.checks.verify_top_up(account, top_up, requirements)

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


def _revert_reason(message: str | None) -> Reason:
    text = (message or "").lower()
    for fragment, reason in _OPEN_REVERTS.items():
        if fragment in text:
            return reason
    return Reason.TRANSACTION_FAILED
