"""Checking a channel's deposits before any transaction: the payer's gasless open and top-ups.

`DepositChecks` checks everything the contract and the token will check: the channel id derives
from the payer, payee, token and salt here; the nonce commits to the channel and the voucher
signer (an open) or to the channel and a salt (a top-up); the signature, the time window, the
payer's balance, the least deposit; and the first voucher against the deposit. It reads the
chain (a balance, an authorization's state, the time) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from agent_pay.chain.base import ChainError
from agent_pay.chain.channel import ChannelManager
from agent_pay.chain.stablecoin import Stablecoin
from agent_pay.errors import ChainUnavailableError, PaymentRejectedError, Reason
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

__all__ = ["VALIDITY_MARGIN", "DepositChecks"]

VALIDITY_MARGIN: Final = 6  # an authorization must stay valid this long: it needs a block
_TROUBLE = (ChainError, OSError, TimeoutError)


class DepositChecks:
    """Checks deposits to `manager` in `tokens`, voucher signatures with `checker`, time
    windows against `chain_clock`."""

    def __init__(
        self,
        manager: ChannelManager,
        tokens: Mapping[str, Stablecoin],
        checker: VoucherChecker,
        *,
        chain_clock: Callable[[], int],
    ) -> None:
        self.manager = manager
        self.chain = manager.chain
        self.tokens = tokens
        self.checker = checker
        self.chain_clock = chain_clock

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
        """Everything about a top-up of `account` before any transaction (nothing to check
        but its terms when it went in already)."""
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


def _min_deposit(requirements: PaymentRequirements) -> int:
    raw = requirements.extra.get("minDeposit", "0")
    try:
        return int(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else 0
    except ValueError:
        return 0
