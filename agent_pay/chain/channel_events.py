"""The channel contract's events as frozen records, and the decoding of a raw log into one."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from agent_pay.chain.channel_state import signer_or_none

__all__ = [
    "ChannelClosed",
    "ChannelEvent",
    "ChannelOpened",
    "ChannelToppedUp",
    "ClaimSkipped",
    "Claimed",
    "CloseRequested",
    "SkipReason",
    "decode_event",
]


class SkipReason(IntEnum):
    """Why `claim_many` skipped a voucher: the contract's `SKIP_*`."""

    NO_CHANNEL = 1
    CLOSED = 2
    NOT_ABOVE_CLAIMED = 3
    OVER_DEPOSIT = 4
    BAD_SIGNATURE = 5


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    channel_id: bytes
    payer: str
    payee: str
    token: str
    signer: str | None
    salt: bytes
    deposit: int


@dataclass(frozen=True, slots=True)
class ChannelToppedUp:
    channel_id: bytes
    amount: int
    deposit: int


@dataclass(frozen=True, slots=True)
class Claimed:
    channel_id: bytes
    payee: str
    amount: int  # paid now
    cumulative_amount: int


@dataclass(frozen=True, slots=True)
class ClaimSkipped:
    channel_id: bytes
    cumulative_amount: int
    reason: SkipReason


@dataclass(frozen=True, slots=True)
class CloseRequested:
    channel_id: bytes
    closes_at: int


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    channel_id: bytes
    claimed: int
    refund: int


ChannelEvent = (
    ChannelOpened | ChannelToppedUp | Claimed | ClaimSkipped | CloseRequested | ChannelClosed
)


def decode_event(raw: dict[str, Any]) -> ChannelEvent:
    """One decoded log of the channel contract (`Contract.decode_log` output) as a record."""
    name = raw["event"]
    if name == "ChannelOpened":
        return ChannelOpened(
            raw["channel_id"],
            raw["payer"],
            raw["payee"],
            raw["token"],
            signer_or_none(raw["signer"]),
            raw["salt"],
            raw["deposit"],
        )
    if name == "ChannelToppedUp":
        return ChannelToppedUp(raw["channel_id"], raw["amount"], raw["deposit"])
    if name == "Claimed":
        return Claimed(raw["channel_id"], raw["payee"], raw["amount"], raw["cumulative_amount"])
    if name == "ClaimSkipped":
        return ClaimSkipped(raw["channel_id"], raw["cumulative_amount"], SkipReason(raw["reason"]))
    if name == "CloseRequested":
        return CloseRequested(raw["channel_id"], raw["closes_at"])
    if name == "ChannelClosed":
        return ChannelClosed(raw["channel_id"], raw["claimed"], raw["refund"])
    raise ValueError(f"not a channel event: {name}")  # pragma: no cover - the ABI has no other
