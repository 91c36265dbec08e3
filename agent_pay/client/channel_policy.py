"""When an agent pays by channel, and how a deposit counts against its budget.

`ChannelPolicy` says when a channel is worth opening (several reads expected from the payee)
and with how much. `ChannelSpending` is the `Spending` a channel-paying `PaymentAuth` uses, and
makes every decision about channels; the channel scheme (`ChannelClientScheme`) asks it and
signs what it decided. It reads the agent's channels from their store, never the scheme:

- a deposit leaves the wallet when its channel opens, so from then on the part of it not yet
  spent on confirmed reads is *locked*: it counts against the budget, as a reservation does,
  until a close refunds it;
- a read on an open channel needs no new budget: its price moves from locked to spent;
- a channel offer is chosen when the agent holds a usable channel for it, or may open one
  within the budget (`why_not`); otherwise "exact" is paid;
- a new channel's deposit, and a used-up channel's top-up, is `deposit_for(offer)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from pydantic import ValidationError

from agent_pay.assets import Asset
from agent_pay.client.channel_store import ChannelRecord, ClientChannelStore
from agent_pay.client.policy import AssetLimit, Spending, SpendingPolicy
from agent_pay.protocol import PaymentRequirements
from agent_pay.protocol.base import normalize_address
from agent_pay.protocol.channel import CHANNEL_SCHEME, ChannelOfferExtra
from agent_pay.protocol.slices import fits

__all__ = ["OPEN_VALIDITY_SECONDS", "ChannelPolicy", "ChannelSpending"]

OPEN_VALIDITY_SECONDS: Final = 3600
"""How long a signed deposit stays valid (it is signed again if it expires unused)."""

_USABLE: Final = ("opening", "open")
_TOPPABLE: Final = ("open", "exhausted")
_HOLDING: Final = ("opening", "open", "exhausted", "stale", "closing")  # deposit not refunded


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
    """A `Spending` that also decides about channels and counts money locked in their
    deposits (see the module doc). `payer`'s channels are read from `store`."""

    def __init__(
        self,
        policy: SpendingPolicy,
        store: ClientChannelStore,
        payer: str,
        channel_policy: ChannelPolicy | None = None,
    ) -> None:
        super().__init__(policy)
        self.store = store
        self.payer = payer
        self.channel_policy = channel_policy or ChannelPolicy()
        self.reads_by_payee: dict[str, int] = {}
        plan = self.channel_policy
        self._expected = {normalize_address(p): n for p, n in plan.expected_reads.items()}
        self._deposits = {normalize_address(t): n for t, n in plan.deposits.items()}

    def expect(self, payee: str, reads: int) -> None:
        """Plan `reads` reads from `payee`: a channel opens when that is enough."""
        with self._lock:
            self._expected[normalize_address(payee)] = reads

    # -- the agent's channels ------------------------------------------------------------------

    def locked(self, asset_key: tuple[str, str]) -> int:
        """Deposit in `asset_key`'s (network, token) not yet spent on confirmed reads nor
        refunded."""
        return sum(
            max(0, r.deposit - r.confirmed)
            for r in self.store
            if (r.network, r.asset) == asset_key and r.status in _HOLDING and r.payer == self.payer
        )

    def usable(self, offer: PaymentRequirements) -> ChannelRecord | None:
        """The channel that can pay `offer` now, if there is one."""
        for record in self._for(offer, _USABLE):
            if record.remaining >= offer.amount or fits(record.unpaid, offer.amount):
                return record
        return None

    def toppable(self, offer: PaymentRequirements) -> ChannelRecord | None:
        """A channel for `offer`'s terms that may be topped up (none in flight, none refused)."""
        for record in self._for(offer, _TOPPABLE):
            if record.top_up_payload is None and not record.top_up_failed:
                return record
        return None

    def _for(self, offer: PaymentRequirements, statuses: tuple[str, ...]) -> list[ChannelRecord]:
        key = (offer.network, _manager(offer), offer.pay_to, offer.asset)
        return [
            r for r in self.store if r.status in statuses and r.key == key and r.payer == self.payer
        ]

    # -- decisions -----------------------------------------------------------------------------

    def why_not(self, offer: PaymentRequirements) -> str | None:
        """Why the channel `offer` should not be paid by channel (None: it should)."""
        try:
            extra = ChannelOfferExtra.from_wire(offer.extra)
        except ValidationError:
            return "the channel offer's extra is not one we understand"
        if self.usable(offer) is not None:
            return None
        plan = self.channel_policy
        with self._lock:
            planned = self._expected.get(offer.pay_to, 0)
        if max(planned, self.paid_to(offer.pay_to) + 1) < plan.min_expected_reads:
            return f"a channel opens after {plan.min_expected_reads} expected reads"
        if self._deposit(offer, extra) is None:
            fixed = self._deposits.get(offer.asset)
            if fixed is not None and fixed < extra.min_deposit:
                return (
                    f"the channel deposit {fixed} is below the server's minimum "
                    f"{extra.min_deposit} (atomic units)"
                )
            return "a channel deposit does not fit the remaining budget"
        return None

    def deposit_for(self, offer: PaymentRequirements) -> int | None:
        """The deposit (or top-up) to sign for `offer`'s channel now; None if none fits."""
        return self._deposit(offer, ChannelOfferExtra.from_wire(offer.extra))

    def _deposit(self, offer: PaymentRequirements, extra: ChannelOfferExtra) -> int | None:
        plan = self.channel_policy
        budget_left = self.remaining_for(offer)
        floor = max(extra.min_deposit, offer.amount * plan.min_expected_reads, offer.amount)
        fixed = self._deposits.get(offer.asset)
        if fixed is not None:
            return fixed if floor <= fixed <= budget_left else None
        deposit = min(offer.amount * plan.deposit_reads, budget_left)
        return deposit if deposit >= floor else None

    # -- Spending ------------------------------------------------------------------------------

    def committed_or_reserved(self, asset: Asset) -> int:
        return super().committed_or_reserved(asset) + self.locked(asset.key)

    def _why_not(self, offer: PaymentRequirements, limit: AssetLimit) -> str | None:
        if offer.scheme != CHANNEL_SCHEME:
            return super()._why_not(offer, limit)
        if offer.amount > limit.max_per_payment:
            return f"{limit.asset.format(offer.amount)} exceeds the per-payment cap"
        return self.why_not(offer)

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


def _manager(offer: PaymentRequirements) -> str:
    raw = offer.extra.get("channelManager")
    return str(raw) if isinstance(raw, str) else ""
