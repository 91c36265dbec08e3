"""A channel as the contract holds it: its status and its `ChannelState` record."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from agent_pay.protocol.channel import ChannelStatus as StatedStatus
from agent_pay.signing.voucher import ZERO_ADDRESS

__all__ = ["ChannelState", "ChannelStatus", "signer_or_none"]


class ChannelStatus(IntEnum):
    """The contract's `STATUS_*`."""

    NONE = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3

    @property
    def stated(self) -> StatedStatus:
        """How a `ChannelStatement` says it (a channel the contract does not hold is closed)."""
        return _STATED[self]


_STATED: Final = {
    ChannelStatus.NONE: StatedStatus.CLOSED,
    ChannelStatus.OPEN: StatedStatus.OPEN,
    ChannelStatus.CLOSING: StatedStatus.CLOSING,
    ChannelStatus.CLOSED: StatedStatus.CLOSED,
}


@dataclass(frozen=True, slots=True)
class ChannelState:
    """One channel as the contract holds it; all zero (status NONE) if there is none."""

    payer: str
    payee: str
    token: str
    signer: str | None  # the authorised voucher signer; None: only the payer signs
    deposit: int
    claimed: int
    closes_at: int  # when the payer may withdraw; 0 until a close is requested
    status: ChannelStatus

    @property
    def remaining(self) -> int:
        """What vouchers can still claim (and what a close would refund)."""
        return self.deposit - self.claimed

    def accepts_signer(self, address: str) -> bool:
        """Whether the contract takes vouchers signed by `address` for this channel."""
        return address in (self.payer, self.signer)


def signer_or_none(address: str) -> str | None:
    """The contract's voucher-signer field: the zero address means none (only the payer)."""
    return None if address == ZERO_ADDRESS else address
