"""The `payload` of agent-pay's "channel" scheme, and the channel statement servers report.

A channel offer is an ordinary x402 v2 `PaymentRequirements` with `scheme: "channel"`: `amount`
is the price of one read, `payTo` the payee, `asset` the token, and `extra` says where the
channel contract is and what it takes (`ChannelOfferExtra`). The agent pays a read with one
EIP-712 voucher for the running total it owes on its channel (`ChannelPayload`); the first read
on a new channel also carries the payer's gasless deposit (`ChannelOpen`), and a read may carry a
top-up (`ChannelTopUp`). Both are EIP-3009 `ReceiveWithAuthorization`s to the channel contract,
whose nonces commit to the channel (see `agent_pay.signing.voucher`).

The server reports where a channel stands (`ChannelStatement`) in `extensions["agent-pay/channel"]`
of each paid read's `PAYMENT-RESPONSE`, of a 402 refusing a voucher, and at
`GET /channels/{channelId}`; a client that lost track resumes from it.

Pure wire types, like the rest of `agent_pay.protocol`; the wire format is in docs/protocol.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import Field, ValidationError

from agent_pay.errors import MalformedPaymentError, Reason
from agent_pay.protocol.base import (
    MAX_UINT256,
    Address,
    Amount,
    Bytes32Hex,
    NonNegativeInt,
    WireModel,
    describe_validation_error,
)
from agent_pay.protocol.declaration import declare, object_schema
from agent_pay.protocol.exact import ExactEvmAuthorization, SignatureHex

__all__ = [
    "CHANNEL_EXTENSION",
    "CHANNEL_SCHEME",
    "STATEMENT_SCHEMA",
    "BareVoucher",
    "ChannelOfferExtra",
    "ChannelOpen",
    "ChannelPayload",
    "ChannelStatement",
    "ChannelStatus",
    "ChannelTopUp",
    "ParsedPayload",
    "VoucherDomainInfo",
    "parse_channel_payload",
    "statement_declaration",
    "statement_json",
    "statement_wire",
]

CHANNEL_SCHEME: Final = "channel"
CHANNEL_EXTENSION: Final = "agent-pay/channel"
"""Key of a `ChannelStatement` in `PAYMENT-RESPONSE` / `PAYMENT-REQUIRED` extensions."""


class ChannelStatus(StrEnum):
    """Where a channel stands, as a `ChannelStatement` says it (the contract's own codes are
    `agent_pay.chain.channel.ChannelStatus`, which maps onto this: `stated`)."""

    OPEN = "open"
    CLOSING = "closing"  # its payer asked to close it, or the payee is closing it
    CLOSED = "closed"


Range = Annotated[list[Amount], Field(min_length=2, max_length=2)]
"""[start, end]: the amounts (start, end] of a running total."""


class VoucherDomainInfo(WireModel):
    """The EIP-712 domain name and version vouchers are signed under (the chain id and the
    verifying contract come from the offer's network and `channelManager`)."""

    name: str
    version: str


class ChannelOfferExtra(WireModel):
    """`PaymentRequirements.extra` of a channel offer.

    `name` / `version` are the token's EIP-712 domain (for the deposit authorization), as in an
    "exact" offer; `minDeposit` is the least deposit a new channel may open with; the payer can
    withdraw `gracePeriod` seconds after asking to close.
    """

    name: str
    version: str
    channel_manager: Address
    min_deposit: Amount
    grace_period: NonNegativeInt
    voucher_domain: VoucherDomainInfo


class ChannelOpen(WireModel):
    """The payer's deposit that opens the channel, sent with the first voucher.

    `authorization` is a `ReceiveWithAuthorization` from the payer to the channel contract of
    the deposit, its nonce `open_nonce(channelId, signer)`; `signature` is over it, under the
    token's domain. `signer` is the voucher key the channel also accepts (left out: only the
    payer signs vouchers).
    """

    salt: Bytes32Hex
    signer: Address | None = None
    authorization: ExactEvmAuthorization
    signature: SignatureHex


class ChannelTopUp(WireModel):
    """A deposit added to an open channel: a `ReceiveWithAuthorization` to the channel contract
    whose nonce is `top_up_nonce(channelId, salt)`."""

    salt: Bytes32Hex
    authorization: ExactEvmAuthorization
    signature: SignatureHex


class ChannelPayload(WireModel):
    """`PaymentPayload.payload` for scheme "channel": one voucher, and the deposit when the
    channel is new (`open`) or growing (`top_up`).

    The voucher is EIP-712 `Voucher(bytes32 channelId,uint256 cumulativeAmount)` signed by the
    payer (or the channel's signer): the payer owes the payee `cumulativeAmount` in all. It pays
    for the read the slice (cumulativeAmount - price, cumulativeAmount] of that total.
    """

    channel_id: Bytes32Hex
    cumulative_amount: Amount
    signature: SignatureHex
    open: ChannelOpen | None = None
    top_up: ChannelTopUp | None = None


class ChannelStatement(WireModel):
    """Where a channel stands at the server.

    `highest` is the highest voucher accepted (what the payee can claim), `served` the price of
    the reads served on it; `highest - served` is what the payer signed for reads it has not
    had (in flight, or lost on the way: the next vouchers may pay into that range again).
    `claimed` is what was redeemed on chain, `deposit` what the channel holds in all. A paid
    read's `PAYMENT-RESPONSE` leaves out what the payer knows (`payer`, `payee`, `asset`) and
    `claimed`; a 402 and `GET /channels/{id}` say everything.
    """

    channel_id: Bytes32Hex
    deposit: Amount
    highest: Amount
    served: Amount
    status: Annotated[ChannelStatus, Field(strict=False)]  # from its wire string
    payer: Address | None = None
    payee: Address | None = None
    asset: Address | None = None
    claimed: Amount | None = None
    unpaid: list[Range] = Field(default_factory=list)
    """The ranges (start, end] below `highest` no read has paid for yet, at most a few."""


def statement_wire(
    channel_id: str,
    deposit: int,
    highest: int,
    served: int,
    status: ChannelStatus,
    unpaid: Sequence[Sequence[int]] = (),
    *,
    parties: tuple[str, str, str] | None = None,
    claimed: int | None = None,
) -> dict[str, Any]:
    """A `ChannelStatement` on the wire, as a JSON-ready dict built without the model (one goes
    out with every paid read): `ChannelStatement.from_wire` reads it back as the statement of
    these values (a test holds them equal). `parties` are (payer, payee, asset); an empty
    `unpaid` is left out."""
    statement: dict[str, Any] = {
        "channelId": channel_id,
        "deposit": str(deposit),
        "highest": str(highest),
        "served": str(served),
        "status": status.value,
    }
    if parties is not None:
        statement["payer"], statement["payee"], statement["asset"] = parties
    if claimed is not None:
        statement["claimed"] = str(claimed)
    if unpaid:
        statement["unpaid"] = [[str(a), str(b)] for a, b in unpaid]
    return statement


_SHORT: Final = frozenset({"channelId", "deposit", "highest", "served", "status", "unpaid"})
"""The fields of a paid read's statement (`statement_wire` without parties or claimed)."""
_to_json: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def statement_json(statement: dict[str, Any]) -> str:
    """`statement` (from `statement_wire`) as compact JSON, as `json.dumps` and the model write
    it (a test holds them equal). A paid read's short statement is written out by hand, at a
    fifth of the cost: every value in it is ours (hex, decimal strings, a status word), none of
    which JSON escapes."""
    if statement.keys() - _SHORT:
        return _to_json(statement)
    unpaid = statement.get("unpaid")
    ranges = ',"unpaid":[' + ",".join(f'["{a}","{b}"]' for a, b in unpaid) + "]" if unpaid else ""
    return (
        f'{{"channelId":"{statement["channelId"]}","deposit":"{statement["deposit"]}",'
        f'"highest":"{statement["highest"]}","served":"{statement["served"]}",'
        f'"status":"{statement["status"]}"{ranges}}}'
    )


# Compact (no patterns): a client echoes this schema in its next payment header.
_AMOUNT = _ADDRESS = {"type": "string"}
STATEMENT_SCHEMA: Final = object_schema(
    {
        "channelId": _AMOUNT,
        "deposit": _AMOUNT,
        "highest": _AMOUNT,
        "served": _AMOUNT,
        "status": {"type": "string"},
        "payer": _ADDRESS,
        "payee": _ADDRESS,
        "asset": _ADDRESS,
        "claimed": _AMOUNT,
        "unpaid": {"type": "array", "items": {"type": "array", "items": _AMOUNT}},
    },
    ["channelId", "deposit", "highest", "served", "status"],
)


def statement_declaration(statement: dict[str, Any]) -> dict[str, Any]:
    """The `extensions["agent-pay/channel"]` entry of a 402: `statement` (a `ChannelStatement`
    on the wire) and its schema. (A paid read's `PAYMENT-RESPONSE` carries the statement
    bare: it is written on every voucher read, where the schema's bytes would cost.)"""
    return declare(statement, STATEMENT_SCHEMA)


_VOUCHER_KEYS: Final = frozenset({"channelId", "cumulativeAmount", "signature"})
_BYTES32: Final = re.compile(r"0x[0-9a-fA-F]{64}")
_SIGNATURE: Final = re.compile(r"0x[0-9a-fA-F]{130}")
_DECIMAL: Final = re.compile(r"0|[1-9][0-9]{0,77}")


@dataclass(frozen=True, slots=True)
class BareVoucher:
    """A `ChannelPayload` with neither `open` nor `top_up`, as `parse_channel_payload` reads it
    fast."""

    channel_id: str
    cumulative_amount: int
    signature: str
    open: None = None
    top_up: None = None


ParsedPayload = ChannelPayload | BareVoucher


def parse_channel_payload(raw: dict[str, Any]) -> ParsedPayload:
    """A `PaymentPayload.payload` as a channel payload; MalformedPaymentError if it does not
    fit.

    A bare voucher (the payload of nearly every read) is checked by hand, exactly as the model
    would check it, in a couple of microseconds; anything else goes through the model."""
    if raw.keys() == _VOUCHER_KEYS:
        channel, amount, signature = raw["channelId"], raw["cumulativeAmount"], raw["signature"]
        if (
            type(channel) is str
            and type(amount) is str
            and type(signature) is str
            and _BYTES32.fullmatch(channel)
            and _DECIMAL.fullmatch(amount)
            and _SIGNATURE.fullmatch(signature)
            and int(amount) <= MAX_UINT256
        ):
            return BareVoucher(channel.lower(), int(amount), signature.lower())
    try:
        return ChannelPayload.from_wire(raw)
    except ValidationError as error:
        detail = describe_validation_error(error)
        raise MalformedPaymentError(f"payload.{detail}", Reason.INVALID_PAYLOAD) from None
