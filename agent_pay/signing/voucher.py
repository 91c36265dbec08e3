"""Channel vouchers, and the ids and nonces that tie a channel to the payer's signatures.

A voucher is EIP-712 typed data `Voucher(bytes32 channelId,uint256 cumulativeAmount)` under the
channel contract's domain ("agent-pay Channel", version "1", chain id, the contract): "I owe the
payee of this channel `cumulativeAmount` in total". The payer (or the channel's authorised
signer) signs one per read; the payee keeps only the highest.

The derivations mirror ``contracts/Channel.vy`` exactly; its views `channel_id`, `open_nonce`,
`top_up_nonce` and `voucher_digest` are the reference, and the tests compare them:

- channel id: ``keccak256(abi_encode(payer, payee, token, salt, manager, chain_id))``
- open nonce: ``keccak256(abi_encode(OPEN_NONCE_TAG, channel_id, signer))``
- top-up nonce: ``keccak256(abi_encode(TOP_UP_NONCE_TAG, channel_id, salt))``

The two nonces are the EIP-3009 nonces of the payer's `ReceiveWithAuthorization` to the channel
contract, derived rather than random so that the signature commits to the whole channel: no one
who sees it can open a channel to another payee or signer with the payer's money.

Nothing here touches a chain, so the client may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from eth_abi import encode as abi_encode
from eth_utils import keccak

from agent_pay.signing._checks import check_address, check_bytes32, check_uint256
from agent_pay.signing.eip712 import Struct, recover_typed, sign_typed, typed_digest
from agent_pay.signing.eip3009 import TransferAuthorization
from agent_pay.signing.signer import Signer
from agent_pay.signing.typed_data import Fields, TokenDomain, build_typed_data

__all__ = [
    "CHANNEL_DOMAIN_NAME",
    "CHANNEL_DOMAIN_VERSION",
    "OPEN_NONCE_TAG",
    "TOP_UP_NONCE_TAG",
    "VOUCHER_FIELDS",
    "ZERO_ADDRESS",
    "Voucher",
    "channel_id",
    "open_authorization",
    "open_nonce",
    "recover_voucher_signer",
    "sign_voucher",
    "top_up_authorization",
    "top_up_nonce",
    "voucher_digest",
    "voucher_domain",
    "voucher_typed_data",
]

CHANNEL_DOMAIN_NAME: Final = "agent-pay Channel"
CHANNEL_DOMAIN_VERSION: Final = "1"
VOUCHER_FIELDS: Final[Fields] = [
    {"name": "channelId", "type": "bytes32"},
    {"name": "cumulativeAmount", "type": "uint256"},
]
OPEN_NONCE_TAG: Final = keccak(text="agent-pay Channel: open")
TOP_UP_NONCE_TAG: Final = keccak(text="agent-pay Channel: top up")
ZERO_ADDRESS: Final = "0x" + "00" * 20
_VOUCHER: Final = Struct("Voucher", VOUCHER_FIELDS)


def voucher_domain(chain_id: int, manager: str) -> TokenDomain:
    """The EIP-712 domain vouchers are signed under: the channel contract `manager` on
    `chain_id`. (`TokenDomain` is a plain EIP-712 domain; here the contract is no token.)"""
    return TokenDomain(CHANNEL_DOMAIN_NAME, CHANNEL_DOMAIN_VERSION, chain_id, manager)


@dataclass(frozen=True, slots=True)
class Voucher:
    """The payer owes the payee of channel `channel_id` `cumulative_amount` in total."""

    channel_id: bytes
    cumulative_amount: int

    def __post_init__(self) -> None:
        check_bytes32("channel_id", self.channel_id)
        check_uint256("cumulative_amount", self.cumulative_amount)

    def eip712_message(self) -> dict[str, Any]:
        """The typed-data `message` (JSON-ready: the channel id as 0x-hex)."""
        return {
            "channelId": "0x" + self.channel_id.hex(),
            "cumulativeAmount": self.cumulative_amount,
        }


def voucher_typed_data(domain: TokenDomain, voucher: Voucher) -> dict[str, Any]:
    """Full typed data of `voucher`, as `eth_signTypedData_v4` takes it."""
    return build_typed_data(domain, "Voucher", VOUCHER_FIELDS, voucher.eip712_message())


def sign_voucher(signer: Signer, domain: TokenDomain, voucher: Voucher) -> bytes:
    """Sign `voucher`; 65 bytes r || s || v.

    Raises:
        ValueError: if the signer returned something that is not a canonical signature.
    """
    return sign_typed(
        signer, voucher_digest(domain, voucher), lambda: voucher_typed_data(domain, voucher)
    )


def recover_voucher_signer(domain: TokenDomain, voucher: Voucher, signature: bytes) -> str:
    """The checksum address that signed `voucher` under `domain`.

    A changed field or domain does not raise: it recovers some other address, so compare the
    result with the channel's payer and signer. (A server checking one voucher per read uses
    `agent_pay.signing.voucher_check.VoucherChecker`, which also skips the checksum.)

    Raises:
        ValueError: if the signature is malformed (length, v, r, high s), as the contract would
            refuse it.
    """
    return recover_typed(lambda: voucher_digest(domain, voucher), signature)


def voucher_digest(domain: TokenDomain, voucher: Voucher) -> bytes:
    """The 32-byte EIP-712 digest the signature covers (the contract's `voucher_digest`)."""
    struct_hash = _VOUCHER.hash(voucher.channel_id, voucher.cumulative_amount)
    return typed_digest(domain.separator(), struct_hash)


# -- channel ids and the nonces of funding authorizations ----------------------------------------


def channel_id(
    payer: str, payee: str, token: str, salt: bytes, *, manager: str, chain_id: int
) -> bytes:
    """The id of the channel from `payer` to `payee` in `token` with `salt`, on the channel
    contract `manager` of chain `chain_id`."""
    check_bytes32("salt", salt)
    check_uint256("chain_id", chain_id)
    addresses = [check_address(a) for a in (payer, payee, token)]
    return keccak(
        abi_encode(
            ["address", "address", "address", "bytes32", "address", "uint256"],
            [*addresses, salt, check_address(manager), chain_id],
        )
    )


def open_nonce(channel: bytes, signer: str | None) -> bytes:
    """The EIP-3009 nonce of the authorization opening `channel` with voucher signer `signer`
    (None: only the payer signs vouchers)."""
    check_bytes32("channel", channel)
    voucher_signer = ZERO_ADDRESS if signer is None else check_address(signer)
    return keccak(
        abi_encode(["bytes32", "bytes32", "address"], [OPEN_NONCE_TAG, channel, voucher_signer])
    )


def top_up_nonce(channel: bytes, salt: bytes) -> bytes:
    """The EIP-3009 nonce of the authorization topping up `channel`; `salt` is fresh per
    top-up."""
    check_bytes32("channel", channel)
    check_bytes32("salt", salt)
    return keccak(abi_encode(["bytes32", "bytes32", "bytes32"], [TOP_UP_NONCE_TAG, channel, salt]))


def open_authorization(
    *,
    payer: str,
    payee: str,
    token: str,
    amount: int,
    salt: bytes,
    signer: str | None,
    valid_after: int,
    valid_before: int,
    manager: str,
    chain_id: int,
) -> TransferAuthorization:
    """What the payer signs as `ReceiveWithAuthorization` (under the token's domain) so that
    anyone can open the channel for it with `open_with_authorization`."""
    channel = channel_id(payer, payee, token, salt, manager=manager, chain_id=chain_id)
    return TransferAuthorization(
        payer, manager, amount, valid_after, valid_before, open_nonce(channel, signer)
    )


def top_up_authorization(
    *,
    payer: str,
    channel: bytes,
    amount: int,
    salt: bytes,
    valid_after: int,
    valid_before: int,
    manager: str,
) -> TransferAuthorization:
    """What the payer signs as `ReceiveWithAuthorization` so that anyone can top up `channel`
    with `top_up_with_authorization`."""
    return TransferAuthorization(
        payer, manager, amount, valid_after, valid_before, top_up_nonce(channel, salt)
    )
