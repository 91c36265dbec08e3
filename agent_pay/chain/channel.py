"""The payment-channel contract (``contracts/Channel.vy``) on any `Chain`.

`ChannelManager` deploys or attaches to the one contract that holds every channel, and wraps each
of its functions twice: ``<fn>_data(...)`` gives the calldata (for batching or for a facilitator's
own transaction machinery) and ``<fn>(sender, ...)`` sends it. Reads come back as a frozen
`ChannelState` (`agent_pay.chain.channel_state`); a receipt's logs decode into frozen event
records (`agent_pay.chain.channel_events`). Both are re-exported here.

The pure derivations (channel id, funding nonces, voucher typed data) live in
`agent_pay.signing.voucher` so that a client can use them without this chain layer; `channel_id`
is re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

from agent_pay.chain.base import Chain, ContractRevertError, Receipt
from agent_pay.chain.channel_events import (
    ChannelClosed,
    ChannelEvent,
    ChannelOpened,
    ChannelToppedUp,
    Claimed,
    ClaimSkipped,
    CloseRequested,
    SkipReason,
    decode_event,
)
from agent_pay.chain.channel_state import ChannelState, ChannelStatus, signer_or_none
from agent_pay.chain.compiler import compile_contract
from agent_pay.chain.contract import Contract, Transactor, deploy_contract
from agent_pay.signing.eip3009 import TransferAuthorization
from agent_pay.signing.signature import SIGNATURE_LENGTH, split_signature
from agent_pay.signing.typed_data import TokenDomain
from agent_pay.signing.voucher import ZERO_ADDRESS, channel_id, open_nonce, voucher_domain

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "ChannelClosed",
    "ChannelEvent",
    "ChannelManager",
    "ChannelOpened",
    "ChannelState",
    "ChannelStatus",
    "ChannelToppedUp",
    "ClaimSkipped",
    "Claimed",
    "CloseRequested",
    "SkipReason",
    "VoucherClaim",
    "channel_id",
]

DEFAULT_GRACE_PERIOD: Final = 86_400
"""Seconds a payer waits between asking to close and withdrawing (the payee's time to claim):
one day, so a payee's server that is down for a night still claims what it is owed."""
MAX_CLAIMS: Final = 100
"""The most vouchers one `claim_many` takes (the contract's `MAX_CLAIMS`)."""

# contract.py names a struct parameter just "tuple"; these two functions are encoded here.
_CLAIM_TUPLE: Final = "(bytes32,uint256,bytes)"
_STATE_TUPLE: Final = "(address,address,address,address,uint256,uint256,uint256,uint8)"
_CLAIM_MANY_SELECTOR: Final = function_signature_to_4byte_selector(f"claim_many({_CLAIM_TUPLE}[])")
_CHANNELS_SELECTOR: Final = function_signature_to_4byte_selector("channels(bytes32)")


@dataclass(frozen=True, slots=True)
class VoucherClaim:
    """One entry of `claim_many`."""

    channel_id: bytes
    cumulative_amount: int
    signature: bytes


# -- the contract ----------------------------------------------------------------------------------


class ChannelManager:
    """The deployed channel contract."""

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self.domain: TokenDomain = voucher_domain(contract.chain.chain_id, contract.address)
        """The EIP-712 domain vouchers are signed under."""

    def __repr__(self) -> str:
        return f"ChannelManager({self.address})"

    @property
    def chain(self) -> Chain:
        return self.contract.chain

    @property
    def address(self) -> str:
        return self.contract.address

    @classmethod
    def deploy(cls, deployer: Transactor, grace_period: int) -> ChannelManager:
        """Deploy a new channel contract whose payers wait `grace_period` seconds to withdraw."""
        compiled = compile_contract("Channel")
        contract = deploy_contract(deployer, compiled.abi, compiled.bytecode, grace_period)
        return cls(contract)

    @classmethod
    def at(cls, chain: Chain, address: str) -> ChannelManager:
        """Attach to a deployed channel contract, checking its EIP-712 domain."""
        manager = cls(Contract(chain, address, compile_contract("Channel").abi))
        _fields, name, version, chain_id, verifying, _salt, _ext = manager.contract.call(
            "eip712Domain"
        )
        expected = manager.domain
        if (name, version, chain_id) != (expected.name, expected.version, expected.chain_id):
            raise ValueError(f"{address} is not a channel contract on chain {chain.chain_id}")
        if to_checksum_address(verifying) != manager.address:
            raise ValueError(f"{address} reports another verifying contract")
        return manager

    # -- reads

    @property
    def grace_period(self) -> int:
        return int(self.contract.call("GRACE_PERIOD"))

    def channel_id(self, payer: str, payee: str, token: str, salt: bytes) -> bytes:
        """The id of the channel these parameters open here (computed locally)."""
        return channel_id(
            payer, payee, token, salt, manager=self.address, chain_id=self.chain.chain_id
        )

    def channel(self, channel: bytes) -> ChannelState:
        """The channel's state (status NONE if there is none)."""
        output = self.chain.call(
            self.address, _CHANNELS_SELECTOR + abi_encode(["bytes32"], [channel])
        )
        (fields,) = abi_decode([_STATE_TUPLE], output)
        payer, payee, token, signer, deposit, claimed, closes_at, status = fields
        return ChannelState(
            to_checksum_address(payer),
            to_checksum_address(payee),
            to_checksum_address(token),
            signer_or_none(to_checksum_address(signer)),
            deposit,
            claimed,
            closes_at,
            ChannelStatus(status),
        )

    def voucher_digest(self, channel: bytes, cumulative_amount: int) -> bytes:
        """The contract's own EIP-712 digest of a voucher."""
        return bytes(self.contract.call("voucher_digest", channel, cumulative_amount))

    def events(self, receipt: Receipt) -> list[ChannelEvent]:
        """This contract's events in `receipt`, in log order."""
        return [
            decode_event(self.contract.decode_log(log))
            for log in receipt.logs
            if log.address == self.address
        ]

    # -- calldata

    def open_data(
        self, payee: str, token: str, amount: int, salt: bytes, signer: str | None = None
    ) -> bytes:
        """`open`: the sender is the payer and has approved `amount` to this contract."""
        return self.contract.encode("open", payee, token, amount, salt, signer or ZERO_ADDRESS)

    def open_with_authorization_data(
        self,
        auth: TransferAuthorization,
        signature: bytes,
        *,
        payee: str,
        token: str,
        salt: bytes,
        signer: str | None = None,
    ) -> bytes:
        """`open_with_authorization` for the payer's signed `ReceiveWithAuthorization` `auth`
        (built with `agent_pay.signing.voucher.open_authorization`).

        Raises:
            ValueError: `auth` is not to this contract or its nonce does not commit to these
                channel terms (the contract would reject it), or the signature is malformed.
        """
        if auth.to != self.address:
            raise ValueError("the authorization is not to this channel contract")
        if auth.nonce != open_nonce(self.channel_id(auth.from_, payee, token, salt), signer):
            raise ValueError("the authorization's nonce does not commit to this channel")
        v, r, s = split_signature(signature)
        return self.contract.encode(
            "open_with_authorization",
            auth.from_,
            payee,
            token,
            auth.value,
            salt,
            signer or ZERO_ADDRESS,
            auth.valid_after,
            auth.valid_before,
            v,
            r.to_bytes(32, "big"),
            s.to_bytes(32, "big"),
        )

    def top_up_data(self, channel: bytes, amount: int) -> bytes:
        """`top_up`: the sender has approved `amount` to this contract."""
        return self.contract.encode("top_up", channel, amount)

    def top_up_with_authorization_data(
        self, channel: bytes, auth: TransferAuthorization, signature: bytes, *, salt: bytes
    ) -> bytes:
        """`top_up_with_authorization` for the payer's signed `ReceiveWithAuthorization` `auth`
        (built with `agent_pay.signing.voucher.top_up_authorization`)."""
        v, r, s = split_signature(signature)
        return self.contract.encode(
            "top_up_with_authorization",
            channel,
            auth.value,
            salt,
            auth.valid_after,
            auth.valid_before,
            v,
            r.to_bytes(32, "big"),
            s.to_bytes(32, "big"),
        )

    def claim_data(self, channel: bytes, cumulative_amount: int, signature: bytes) -> bytes:
        return self.contract.encode("claim", channel, cumulative_amount, signature)

    def claim_many_data(self, claims: Sequence[VoucherClaim]) -> bytes:
        """`claim_many`; sort `claims` by (payee, token) so each pair is paid in one transfer."""
        if len(claims) > MAX_CLAIMS:
            raise ValueError(f"at most {MAX_CLAIMS} claims per call, got {len(claims)}")
        if any(len(c.signature) > SIGNATURE_LENGTH for c in claims):
            # The contract takes Bytes[65]: a longer one would revert the whole batch.
            raise ValueError(f"a signature is longer than {SIGNATURE_LENGTH} bytes")
        entries = [(c.channel_id, c.cumulative_amount, c.signature) for c in claims]
        return _CLAIM_MANY_SELECTOR + abi_encode([f"{_CLAIM_TUPLE}[]"], [entries])

    def close_data(self, channel: bytes, cumulative_amount: int, signature: bytes = b"") -> bytes:
        """`close` by the payee; an empty signature when `cumulative_amount` is what is already
        claimed."""
        return self.contract.encode("close", channel, cumulative_amount, signature)

    def request_close_data(self, channel: bytes) -> bytes:
        return self.contract.encode("request_close", channel)

    def withdraw_data(self, channel: bytes) -> bytes:
        return self.contract.encode("withdraw", channel)

    # -- transactions: each sends the matching calldata; with `check`, a revert raises
    # ContractRevertError. `gas=None` estimates (and then a revert raises at estimation).

    def send(
        self, sender: Transactor, data: bytes, *, gas: int | None = None, check: bool = True
    ) -> Receipt:
        """Send calldata built by one of the ``*_data`` methods to this contract."""
        receipt = sender.transact(self.address, data, gas=gas)
        if check and not receipt.status:
            raise ContractRevertError(receipt.revert_reason)
        return receipt

    def open(
        self,
        payer: Transactor,
        payee: str,
        token: str,
        amount: int,
        salt: bytes,
        signer: str | None = None,
        *,
        gas: int | None = None,
        check: bool = True,
    ) -> Receipt:
        return self.send(
            payer, self.open_data(payee, token, amount, salt, signer), gas=gas, check=check
        )

    def open_with_authorization(
        self,
        sender: Transactor,
        auth: TransferAuthorization,
        signature: bytes,
        *,
        payee: str,
        token: str,
        salt: bytes,
        signer: str | None = None,
        gas: int | None = None,
        check: bool = True,
    ) -> Receipt:
        data = self.open_with_authorization_data(
            auth, signature, payee=payee, token=token, salt=salt, signer=signer
        )
        return self.send(sender, data, gas=gas, check=check)

    def top_up(
        self,
        sender: Transactor,
        channel: bytes,
        amount: int,
        *,
        gas: int | None = None,
        check: bool = True,
    ) -> Receipt:
        return self.send(sender, self.top_up_data(channel, amount), gas=gas, check=check)

    def top_up_with_authorization(
        self,
        sender: Transactor,
        channel: bytes,
        auth: TransferAuthorization,
        signature: bytes,
        *,
        salt: bytes,
        gas: int | None = None,
        check: bool = True,
    ) -> Receipt:
        data = self.top_up_with_authorization_data(channel, auth, signature, salt=salt)
        return self.send(sender, data, gas=gas, check=check)

    def claim(
        self,
        sender: Transactor,
        channel: bytes,
        cumulative_amount: int,
        signature: bytes,
        *,
        gas: int | None = None,
        check: bool = True,
    ) -> Receipt:
        return self.send(
            sender, self.claim_data(channel, cumulative_amount, signature), gas=gas, check=check
        )

    def claim_many(
        self,
        sender: Transactor,
        claims: Sequence[VoucherClaim],
        *,
        gas: int | None = None,
        check: bool = True,
    ) -> Receipt:
        """Redeem many vouchers; skipped ones are `ClaimSkipped` events in the receipt."""
        return self.send(sender, self.claim_many_data(claims), gas=gas, check=check)

    def close(
        self,
        payee: Transactor,
        channel: bytes,
        cumulative_amount: int,
        signature: bytes = b"",
        *,
        gas: int | None = None,
        check: bool = True,
    ) -> Receipt:
        data = self.close_data(channel, cumulative_amount, signature)
        return self.send(payee, data, gas=gas, check=check)

    def request_close(
        self, payer: Transactor, channel: bytes, *, gas: int | None = None, check: bool = True
    ) -> Receipt:
        return self.send(payer, self.request_close_data(channel), gas=gas, check=check)

    def withdraw(
        self, payer: Transactor, channel: bytes, *, gas: int | None = None, check: bool = True
    ) -> Receipt:
        return self.send(payer, self.withdraw_data(channel), gas=gas, check=check)
