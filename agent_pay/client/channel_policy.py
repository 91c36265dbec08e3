"""When an agent pays by channel, and how a deposit counts against its budget.

`ChannelPolicy` says when a channel is worth opening (several reads expected from the payee)
and with how much. `ChannelSpending` is the `Spending` a channel-paying `PaymentAuth` uses:

- a deposit leaves the wallet when its channel opens, so from then on the part of it not yet
  spent on confirmed reads is *locked*: it counts against the budget, as a reservation does,
  until a close refunds it;
- a read on an open channel needs no new budget: its price moves from locked to spent;
- a channel offer is chosen only when the channel scheme says so (`why_not`): it holds a
  usable channel, or may open one within the budget; otherwise "exact" is paid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from agent_pay.assets import Asset
from agent_pay.client.policy import AssetLimit, Spending, SpendingPolicy
from agent_pay.protocol import PaymentRequirements
from agent_pay.protocol.channel import CHANNEL_SCHEME

__all__ = ["OPEN_VALIDITY_SECONDS", "ChannelDecisions", "ChannelPolicy", "ChannelSpending"]

OPEN_VALIDITY_SECONDS: Final = 3600
"""How long a signed deposit stays valid (it is signed again if it expires unused)."""


class ChannelDecisions(Protocol):
    """What `ChannelSpending` asks the channel scheme (`ChannelClientScheme`)."""

    def locked(self, asset_key: tuple[str, str]) -> int:
        """Deposit in (network, token) not yet spent on confirmed reads nor refunded."""
        ...

    def why_not(self, offer: PaymentRequirements, budget_left: int) -> str | None:
        """Why `offer` should not be paid by channel (None: it should)."""
        ...


@dataclass(frozen=True)
class ChannelPolicy:
    """When to open a channel, and with how much.

    Args:
        deposit_reads: the deposit, in reads at the offer's price (clipped to the budget left).
        deposits: a fixed deposit per token (checksum address -> atomic units), used instead
            of `deposit_reads` for that token, never clipped: when it does not fit the budget
            left (or is below the offer's `minDeposit`), no channel opens.
        min_expected_reads: open only when at least this many reads from the payee are
            expected (and the deposit covers that many).
        expected_reads: reads the agent plans per payee (checksum address); without a plan,
            the expectation is one more than the reads already paid to that payee.
    """

    deposit_reads: int = 100
    min_expected_reads: int = 3
    expected_reads: Mapping[str, int] = field(default_factory=dict)
    deposits: Mapping[str, int] = field(default_factory=dict)
    open_validity: int = OPEN_VALIDITY_SECONDS


class ChannelSpending(Spending):
    """A `Spending` that also counts money locked in channel deposits (see the module doc)."""

    def __init__(self, policy: SpendingPolicy, channels: ChannelDecisions) -> None:
        super().__init__(policy)
        self.channels = channels
        self.reads_by_payee: dict[str, int] = {}

    def committed_or_reserved(self, asset: Asset) -> int:
        return super().committed_or_reserved(asset) + self.channels.locked(asset.key)

    def _why_not(self, offer: PaymentRequirements, limit: AssetLimit) -> str | None:
        if offer.scheme != CHANNEL_SCHEME:
            return super()._why_not(offer, limit)
        if offer.amount > limit.max_per_payment:
            return f"{limit.asset.format(offer.amount)} exceeds the per-payment cap"
        return self.channels.why_not(offer, self.remaining(limit.asset))

    def reserve(self, offer: PaymentRequirements) -> None:
        if offer.scheme != CHANNEL_SCHEME:  # a channel read is paid from its locked deposit
            super().reserve(offer)

    def commit(self, offer: PaymentRequirements, *, reserved: bool = True) -> None:
        with self._lock:
            self.reads_by_payee[offer.pay_to] = self.reads_by_payee.get(offer.pay_to, 0) + 1
        super().commit(offer, reserved=reserved and offer.scheme != CHANNEL_SCHEME)

    def release(self, offer: PaymentRequirements) -> None:
        if offer.scheme != CHANNEL_SCHEME:
            super().release(offer)

    def remaining_for(self, offer: PaymentRequirements) -> int:
        """The budget left in `offer`'s token."""
        limit = self.policy.limit_for(offer)
        return self.remaining(limit.asset) if limit is not None else 0

    def paid_to(self, payee: str) -> int:
        with self._lock:
            return self.reads_by_payee.get(payee, 0)
