"""What a payee knows about one channel, and the rule that decides whether a voucher pays a read.

The rule. The payer owes a running total; each voucher signs a new total `C`, and a read priced
`p` paid with it is paid by the *slice* (C - p, C] of that total. A read is served iff its slice
lies in ranges no read has paid for yet:

- above `highest` (the highest voucher accepted): the common case, C = highest + p;
- or inside an *unpaid range* below it: a range some voucher skipped over, because vouchers of
  concurrent reads arrive out of order (C = highest + 2p, then C = highest + p), or because a
  read's request was lost on the way and its voucher is sent again later.

Then `highest = max(highest, C)` and `served += p`, under the channel's lock. So

- concurrent reads on one channel are all served, in whatever order they arrive;
- a voucher sent again (replayed, or an old one) pays for nothing: its slice is paid. The one
  exception is the same voucher for the same resource within `replay_window` seconds, which
  is the client retrying a read whose answer it lost: it is served again, charged nothing,
  until a claim sends it to the chain (`exposed`), where anyone can copy it;
- the payee can claim `highest`, and `highest - served` (the unpaid ranges) is exactly what the
  payer signed for reads it has not had; it shrinks again as later vouchers pay into those
  ranges, so a payer loses nothing to a lost request, and never pays beyond what it signed.

The issue's "cumulative amount = last accepted + price" is this rule when reads come one at a
time. Where a channel stands is reported to the payer (`ChannelStatement`) so that a client that
lost track resumes from it.

Every read a voucher paid is also a `PaidRead`: what entitles the payer to read that resource
again for free (a re-read by key proof, see `agent_pay.server.entitlements`). The account queues
it, under the same lock as the acceptance, for the store to write in the same transaction as the
account's snapshot (`snapshot.checkpoint`), so that a voucher and the entitlement it bought are
on disk together or not at all; until written it stays findable here (`unwritten_read`).

The account also caches the channel's on-chain terms (payer, payee, token, deposit, status),
refreshed in the background (`agent_pay.facilitator.channel.watch`): checking a voucher reads no
chain. Pure and thread-safe: no I/O here.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Final

from eth_utils import to_canonical_address

from agent_pay.chain.channel import ChannelState, ChannelStatus
from agent_pay.errors import Reason
from agent_pay.facilitator.channel.records import (
    Acceptance,
    ChannelBusyError,
    ChannelRefusedError,
    PaidRead,
    ReadChange,
    Recent,
)
from agent_pay.protocol.channel import statement_wire
from agent_pay.protocol.slices import holding, merge, subtract

__all__ = [
    "MAX_RECENT",
    "MAX_UNPAID_RANGES",
    "Acceptance",
    "ChannelAccount",
    "ChannelRefusedError",
    "PaidRead",
    "ReadChange",
]

MAX_UNPAID_RANGES: Final = 256
"""Unpaid ranges kept per channel; beyond it the lowest is given up (see `ChannelAccount`)."""
MAX_RECENT: Final = 64
"""Accepted vouchers remembered per channel, for replays and retries."""


@dataclass(slots=True, eq=False)
class ChannelAccount:
    """One channel as the payee's server sees it: its on-chain terms (cached) and the vouchers
    accepted on it. Every field is guarded by `lock`.

    `unpaid` holds the (start, end] ranges below `highest` no read has paid for, sorted and
    disjoint; at most `MAX_UNPAID_RANGES`. Beyond that the lowest range is dropped (`forfeited`):
    the payer signed it and may be claimed for it, but no read will pay into it any more. Only a
    payer creating holes on purpose gets there.
    """

    channel_id: bytes
    payer: str
    payee: str
    token: str
    signer: str | None
    deposit: int
    claimed: int  # redeemed on chain, as last seen
    status: ChannelStatus
    closes_at: int = 0
    highest: int = 0
    signature: bytes = b""  # of the `highest` voucher
    served: int = 0
    unpaid: list[list[int]] = field(default_factory=list)
    forfeited: int = 0
    stopping: bool = False  # the payee is closing it: no more reads
    version: int = 0  # bumped on every change, so the store writes what changed
    recent: dict[int, Recent] = field(default_factory=dict)
    # The highest voucher sent to the chain in a claim, public from then on (not kept on disk:
    # after a restart `claimed`, from the chain, says the same once the claim is mined).
    exposed: int = 0
    # On a shared store: until when (`time.monotonic()`) this instance's lease on the channel
    # lets it accept vouchers (see `agent_pay.store.postgres.channels`); for ever otherwise.
    lease_until: float = math.inf
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Paid reads not yet handed to the store (`checkpoint`), and those not yet known written.
    _changes: list[ReadChange] = field(default_factory=list, repr=False)
    _unwritten: dict[int, PaidRead] = field(default_factory=dict, repr=False)
    _signers: tuple[bytes, ...] = field(default=(), repr=False)
    _channel_hex: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        self._update_signers()
        self._channel_hex = "0x" + self.channel_id.hex()

    @classmethod
    def from_chain(cls, channel_id: bytes, state: ChannelState) -> ChannelAccount:
        return cls(
            channel_id,
            state.payer,
            state.payee,
            state.token,
            state.signer,
            state.deposit,
            state.claimed,
            state.status,
            state.closes_at,
        )

    def _update_signers(self) -> None:
        signers = [to_canonical_address(self.payer)]
        if self.signer is not None:
            signers.append(to_canonical_address(self.signer))
        self._signers = tuple(signers)

    # -- on-chain terms

    def refresh(self, state: ChannelState) -> bool:
        """Take the chain's latest view of this channel; True if anything changed."""
        with self.lock:
            before = (self.deposit, self.claimed, self.status, self.closes_at)
            # Deposits and claims only grow; a stale read must not shrink them.
            self.deposit = max(self.deposit, state.deposit)
            self.claimed = max(self.claimed, state.claimed)
            if state.status > self.status:
                self.status = state.status
                self.closes_at = state.closes_at
            changed = before != (self.deposit, self.claimed, self.status, self.closes_at)
            if changed:
                self.version += 1
            return changed

    @property
    def signers(self) -> tuple[bytes, ...]:
        """The 20-byte addresses whose vouchers the channel takes: the payer, and its signer."""
        return self._signers

    def accepts_signer(self, address: bytes) -> bool:
        """Whether vouchers recovered to the 20-byte `address` are the payer's or its signer's."""
        return address in self._signers

    @property
    def held(self) -> bool:
        """Whether this instance may accept vouchers on the channel now (its lease)."""
        return time.monotonic() < self.lease_until

    @property
    def live(self) -> bool:
        """Open, no close requested, and not being closed by the payee."""
        return self.status is ChannelStatus.OPEN and not self.stopping

    # -- the rule

    def accept(
        self,
        cumulative_amount: int,
        price: int,
        signature: bytes,
        *,
        resource: str,
        now: float,
        replay_window: float,
        url: str | None = None,
    ) -> Acceptance:
        """Apply the rule to a voucher whose signature was checked (it is the payer's or the
        signer's, for this channel): serve one read priced `price` of `resource` (a URL path;
        `url` is the URL as sold, named by a re-read's receipt), or raise
        `ChannelRefusedError`. See the module docstring. ChannelBusyError if the channel's
        lease (on a shared store) is not this instance's any more."""
        with self.lock:
            if time.monotonic() >= self.lease_until:
                raise ChannelBusyError(f"channel {self._channel_hex} is not leased here now")
            return self._accept(
                cumulative_amount, price, signature, resource, url, now, replay_window
            )

    def check(self, cumulative_amount: int, price: int, signature: bytes, resource: str) -> None:
        """Raise `ChannelRefusedError` if `accept` would refuse the voucher now (a replay of an
        accepted voucher counts as acceptable); change nothing."""
        with self.lock:
            self._refusal(cumulative_amount, price, signature, resource)

    def _accept(
        self,
        cumulative: int,
        price: int,
        signature: bytes,
        resource: str,
        url: str | None,
        now: float,
        replay_window: float,
    ) -> Acceptance:
        recent = self.recent.get(cumulative)
        if recent is not None and recent.signature == signature:
            # The payer's retry of a lost answer, but only while the voucher is private: once
            # a claim carried it to the chain, anyone could copy it from there.
            public = cumulative <= max(self.claimed, self.exposed)
            if recent.resource == resource and now - recent.at <= replay_window and not public:
                return self._acceptance(cumulative, recent.price, replayed=True)
            raise self._refused(
                "this voucher was already spent on a read; sign the next amount",
                Reason.CHANNEL_VOUCHER_USED,
            )
        hole = self._refusal(cumulative, price, signature, resource)
        low, highest = cumulative - price, self.highest
        if low >= highest:
            if low > highest:  # skipped over: a concurrent read's voucher will pay in here
                self.unpaid.append([highest, low])
        else:  # pay (low, min(cumulative, highest)] out of unpaid range `hole`, which holds it
            self.unpaid[hole : hole + 1] = subtract(
                [self.unpaid[hole]], [(low, min(cumulative, highest))]
            )
        if cumulative > highest:
            self.highest, self.signature = cumulative, signature
        self.served += price
        self.version += 1
        self.recent[cumulative] = Recent(signature, resource, now, price)
        read = self._read(cumulative, resource, url, price, now)
        self._changes.append((cumulative, resource, read))
        self._unwritten[cumulative] = read
        if len(self.recent) > MAX_RECENT:
            del self.recent[next(iter(self.recent))]
        if len(self.unpaid) > MAX_UNPAID_RANGES:
            start, end = self.unpaid.pop(0)
            self.forfeited += end - start
        return self._acceptance(cumulative, price, replayed=False)

    def _read(
        self, cumulative: int, resource: str, url: str | None, price: int, at: float
    ) -> PaidRead:
        return PaidRead(
            self.channel_id,
            cumulative,
            self.payer,
            self.payee,
            self.token,
            resource,
            url or resource,
            price,
            at,
        )

    def _refusal(self, cumulative: int, price: int, signature: bytes, resource: str) -> int:
        """Raise `ChannelRefusedError` if the voucher must be refused; else return the index of
        the unpaid range its slice lies in (-1: above `highest`, or a retry of a paid read)."""
        if self.status is not ChannelStatus.OPEN or self.stopping:
            why = "closed" if self.status is ChannelStatus.CLOSED else "closing"
            raise self._refused(
                f"this channel is {why}: open a new channel or pay another way",
                Reason.CHANNEL_CLOSED,
            )
        recent = self.recent.get(cumulative)
        if recent is not None and recent.signature == signature:
            if recent.resource == resource:
                return -1  # a retry of a paid read (accept decides on the replay window)
            raise self._refused(
                "this voucher was already spent on a read; sign the next amount",
                Reason.CHANNEL_VOUCHER_USED,
            )
        if cumulative > self.deposit:
            raise self._refused(
                f"the voucher's {cumulative} exceeds the channel's deposit of {self.deposit}: "
                "top up the channel or open a new one",
                Reason.CHANNEL_OVER_DEPOSIT,
            )
        low = cumulative - price
        below = low < self.highest  # pays into the range signed already: only into a hole
        hole = holding(self.unpaid, low, min(cumulative, self.highest)) if below else -1
        if low < 0 or (below and hole < 0):
            raise self._refused(
                f"the voucher's {cumulative} pays for a range already paid for (the server "
                f"accepted up to {self.highest} and served {self.served}): sign "
                f"{self.highest + price} for this read",
                Reason.CHANNEL_AMOUNT_NOT_INCREASING,
            )
        return hole

    def release(self, cumulative: int, price: int) -> None:
        """Undo the acceptance of voucher `cumulative` (its read could not be served): its
        slice is unpaid again, so sending the same voucher again pays for the read."""
        with self.lock:
            recent = self.recent.get(cumulative)
            if recent is None or recent.price != price:
                return
            del self.recent[cumulative]
            self.served -= price
            self.unpaid = merge([*self.unpaid, [cumulative - price, cumulative]])
            self.version += 1
            # The read it paid for was not had: no entitlement (the store deletes the row if
            # it was written already).
            self._unwritten.pop(cumulative, None)
            self._changes.append((cumulative, recent.resource, None))

    # -- what the payee tells the payer

    def _acceptance(self, cumulative: int, price: int, *, replayed: bool) -> Acceptance:
        return Acceptance(
            self.channel_id, self.payer, cumulative, price, replayed, self._statement()
        )

    def _refused(self, message: str, reason: Reason) -> ChannelRefusedError:
        return ChannelRefusedError(message, reason, self._statement(full=True))

    def statement(self) -> dict[str, Any]:
        """Where the channel stands, as the wire's `ChannelStatement` (a JSON-ready dict)."""
        with self.lock:
            return self._statement(full=True)

    def _statement(self, *, full: bool = False) -> dict[str, Any]:
        # The short one goes out with every paid read: what the payer does not know already.
        status = self.status
        if status is ChannelStatus.OPEN and self.stopping:
            status = ChannelStatus.CLOSING
        if not full:
            return statement_wire(
                self._channel_hex,
                self.deposit,
                self.highest,
                self.served,
                status.stated,
                self.unpaid,
            )
        return statement_wire(
            self._channel_hex,
            self.deposit,
            self.highest,
            self.served,
            status.stated,
            self.unpaid,
            parties=(self.payer, self.payee, self.token),
            claimed=self.claimed,
        )

    # -- paid reads (entitlements), for the store

    def unwritten_read(self, resource: str) -> PaidRead | None:
        """A read of `resource` paid on this channel that the store has not written yet."""
        with self.lock:
            for read in self._unwritten.values():
                if read.resource == resource:
                    return read
            return None

    def take_changes(self) -> list[ReadChange]:
        """The paid-read changes since the last call, for the store (see
        `agent_pay.facilitator.channel.snapshot.checkpoint`). The caller holds `lock`."""
        changes, self._changes = self._changes, []
        return changes

    def written(self, changes: list[ReadChange]) -> None:
        """`changes` (from `checkpoint`) are on disk: their reads need not be kept here."""
        with self.lock:
            for cumulative, _, read in changes:
                if read is not None and self._unwritten.get(cumulative) is read:
                    del self._unwritten[cumulative]

    def unwritten(self, changes: list[ReadChange]) -> None:
        """Writing `changes` (from `checkpoint`) failed: hand them to the next checkpoint."""
        with self.lock:
            self._changes[:0] = changes
