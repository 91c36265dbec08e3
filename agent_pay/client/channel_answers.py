"""How a channel record follows the server's answers to its vouchers.

`VoucherTicket` is what a voucher payment says about itself (channel, cumulative total, price):
`ChannelClientScheme` reads it back from the payment it signed when the answer comes, so the
answer is matched to its voucher with no hand-off kept anywhere. `settle`, `refuse` and
`adopt` move a `ChannelRecord` on from a confirmed read, a refused one, and the server's
`ChannelStatement`; the caller holds the scheme's lock and saves the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from agent_pay.client.channel_store import ChannelRecord
from agent_pay.errors import Reason
from agent_pay.protocol import PaymentPayload
from agent_pay.protocol.channel import ChannelStatement
from agent_pay.protocol.slices import fits, merge, subtract

__all__ = ["OPEN_FAILED", "VoucherTicket", "adopt", "refuse", "settle"]

OPEN_FAILED: Final = frozenset(
    {
        Reason.CHANNEL_INVALID_OPEN,
        Reason.CHANNEL_DEPOSIT_TOO_SMALL,
        Reason.INSUFFICIENT_BALANCE,
        Reason.VALID_AFTER_FUTURE,
        Reason.VALID_BEFORE_EXPIRED,
        Reason.NONCE_ALREADY_USED,
        Reason.TRANSACTION_FAILED,
    }
)
"""Refusals that mean a deposit (an open or a top-up) did not go in."""


@dataclass(frozen=True, slots=True)
class VoucherTicket:
    """One voucher as its payment carries it: the slice (cumulative - price, cumulative]."""

    channel_id: str  # 0x-hex, lower case
    cumulative: int
    price: int

    @classmethod
    def of(cls, payment: PaymentPayload) -> VoucherTicket | None:
        """The voucher `payment` carries; None if it is not a channel payment we can read."""
        try:
            channel = str(payment.payload["channelId"]).lower()
            cumulative = int(payment.payload["cumulativeAmount"])
        except (KeyError, TypeError, ValueError):
            return None
        return cls(channel, cumulative, payment.accepted.amount)


def settle(
    record: ChannelRecord,
    voucher: VoucherTicket | None,
    price: int,
    statement: ChannelStatement | None,
    inflight: Mapping[int, int],
) -> None:
    """The server confirmed a read of `price` on `record` paid by `voucher` (None: a payment
    whose voucher we cannot tell)."""
    if record.status == "opening":
        record.status, record.open_payload = "open", None
    record.confirmed += voucher.price if voucher is not None else price
    record.reads += 1
    paid_beyond = voucher is not None and voucher.cumulative > record.deposit - record.top_up_amount
    if record.top_up_payload is not None and paid_beyond:
        _topped(record)  # a voucher beyond the old deposit was paid
    if statement is not None:
        adopt(record, statement, inflight)
    spent = record.remaining < price and not fits(record.unpaid, price)
    if record.status == "open" and spent:
        record.status = "exhausted"


def refuse(record: ChannelRecord, voucher: VoucherTicket | None, reason: str | None) -> None:
    """The server refused `voucher` on `record` for `reason`: nothing was charged."""
    refill = voucher is not None and voucher.cumulative <= record.top
    if record.status == "opening" and reason in OPEN_FAILED:
        record.status = "failed"
    elif record.top_up_payload is not None and reason in OPEN_FAILED:
        # The top-up did not go in: take it back out of the deposit; the channel is used up,
        # and what the policy pays next goes elsewhere.
        record.deposit -= record.top_up_amount
        record.top_up_payload, record.top_up_amount = None, 0
        record.status, record.top_up_failed, refill = "exhausted", True, False
    elif reason in (Reason.CHANNEL_CLOSED, Reason.CHANNEL_UNKNOWN):
        record.status = "closed" if record.status != "opening" else "failed"
    elif reason == Reason.CHANNEL_OVER_DEPOSIT:
        record.status = "exhausted"
    elif reason in (Reason.CHANNEL_AMOUNT_NOT_INCREASING, Reason.CHANNEL_VOUCHER_USED):
        refill = False
        if voucher is not None and voucher.cumulative == record.top:
            record.status = "stale"  # the server is ahead of us: resume() from it
        else:
            record.unpaid = []  # a range we thought unpaid was not
    elif reason == Reason.CHANNEL_INVALID_SIGNATURE:
        record.status, refill = "stale", False
    if refill and voucher is not None:
        slice_ = [voucher.cumulative - voucher.price, voucher.cumulative]
        record.unpaid = merge([*record.unpaid, slice_])


def adopt(record: ChannelRecord, statement: ChannelStatement, inflight: Mapping[int, int]) -> None:
    """Take the server's view: its highest and served, and its unpaid ranges (less the slices
    in `inflight`, cumulative -> price), keeping ranges of ours above its highest.

    Answers to concurrent reads come back in any order: a statement that counts less served
    than one already taken is older, and its unpaid ranges may have been paid since (by a
    voucher whose answer came first), so they are not taken."""
    if record.top_up_payload is not None and statement.deposit >= record.deposit:
        _topped(record)  # the server has the new deposit
    older = statement.served < record.served
    record.highest = max(record.highest, statement.highest)
    record.served = max(record.served, statement.served)
    record.claimed = max(record.claimed, statement.claimed or 0)
    record.deposit = max(record.deposit, statement.deposit)
    record.top = max(record.top, statement.highest)
    if older:
        return
    ranges = [[a, b] for a, b in statement.unpaid]
    ranges += [r for r in record.unpaid if r[0] >= statement.highest]
    busy = [(c - p, c) for c, p in inflight.items()]
    record.unpaid = merge(subtract(ranges, busy))


def _topped(record: ChannelRecord) -> None:
    """The top-up in flight went in: stop sending it."""
    record.top_up_payload, record.top_up_amount = None, 0
