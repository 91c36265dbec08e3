"""The agent's spending policy: which tokens, how much per payment, how much in all, to whom.

The policy is checked before anything is signed: a payment over policy raises
`PolicyViolationError` and no signature ever exists. `SpendingPolicy` is the immutable rule;
`Spending` tracks what has been spent against it (thread-safe, shared by sync and async use).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from eth_utils import to_checksum_address

from agent_pay.assets import Asset
from agent_pay.client.spending_ledger import MemoryTally, SpendingFile, Tally
from agent_pay.errors import NoAcceptableOfferError, PolicyViolationError
from agent_pay.protocol import PaymentRequirements

__all__ = ["MAX_AUTHORIZATION_SECONDS", "AssetLimit", "Spending", "SpendingPolicy"]

MAX_AUTHORIZATION_SECONDS = 7 * 86_400
"""The longest validity (an offer's `maxTimeoutSeconds`) an authorization is signed for. A
server asking for more could hold the signed payment and settle it at any time (or, past
2**256, ask for one that cannot be signed at all): such an offer breaks the policy."""


@dataclass(frozen=True, slots=True)
class AssetLimit:
    """Limits for one token, in its atomic units."""

    asset: Asset
    max_per_payment: int
    budget: int

    def __post_init__(self) -> None:
        if self.max_per_payment < 0 or self.budget < 0:
            raise ValueError("limits must be non-negative")


@dataclass(frozen=True)
class SpendingPolicy:
    """What an agent may pay. Tokens are tried in the order given (first is preferred).

    Args:
        limits: one `AssetLimit` per token the agent is willing to pay with.
        allowed_payees: if given, only these addresses may be paid.
    """

    limits: tuple[AssetLimit, ...]
    allowed_payees: frozenset[str] | None = None
    _by_key: dict[tuple[str, str], AssetLimit] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "limits", tuple(self.limits))
        object.__setattr__(self, "_by_key", {lim.asset.key: lim for lim in self.limits})
        if self.allowed_payees is not None:
            payees = frozenset(to_checksum_address(p) for p in self.allowed_payees)
            object.__setattr__(self, "allowed_payees", payees)

    @classmethod
    def per_token(
        cls,
        assets: Iterable[Asset],
        *,
        max_per_payment: str | Decimal,
        budget: str | Decimal,
        allowed_payees: Iterable[str] | None = None,
    ) -> SpendingPolicy:
        """The same human-unit limits ("0.5", "10") for each token."""
        limits = tuple(AssetLimit(a, a.parse(max_per_payment), a.parse(budget)) for a in assets)
        payees = frozenset(allowed_payees) if allowed_payees is not None else None
        return cls(limits, payees)

    def limit_for(self, requirement: PaymentRequirements) -> AssetLimit | None:
        """The limit that governs paying `requirement`, or None if we don't pay with that token."""
        return self._by_key.get((requirement.network, requirement.asset))


class Spending:
    """Money spent and reserved against a policy. Reserve before signing, then settle up.

    A reservation is committed when the server confirms the payment and released when the
    server refuses it (the protocol guarantees a refused payment is not charged). When the
    outcome is unknown (the connection dropped) the reservation stays: we never under-count.

    The tally lives in memory by default; `Spending.open(policy, directory, payer)` keeps it
    in a file there, so the budget holds across restarts and across processes paying from
    the same key (see `agent_pay.client.spending_ledger`).
    """

    def __init__(self, policy: SpendingPolicy, *, tally: Tally | None = None) -> None:
        self.policy = policy
        self.tally: Tally = tally if tally is not None else MemoryTally()
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls, policy: SpendingPolicy, directory: str | os.PathLike[str], payer: str
    ) -> Spending:
        """A `Spending` whose tally for `payer` is kept in `directory`.

        Raises:
            ConfigurationError: if the file cannot be opened.
        """
        return cls(policy, tally=SpendingFile.open(directory, payer))

    def spent(self, asset: Asset) -> int:
        """Atomic units confirmed spent in `asset`."""
        return self.tally.totals(asset.key)[0]

    def committed_or_reserved(self, asset: Asset) -> int:
        spent, reserved = self.tally.totals(asset.key)
        return spent + reserved

    def remaining(self, asset: Asset) -> int:
        limit = self.policy._by_key.get(asset.key)
        if limit is None:
            return 0
        return max(0, limit.budget - self.committed_or_reserved(asset))

    def choose(
        self, offers: Sequence[PaymentRequirements], schemes: Sequence[str] = ("exact",)
    ) -> PaymentRequirements:
        """Pick the offer the policy allows that comes first in `schemes` order, then in the
        policy's token order. Offers in other schemes are ignored.

        Raises NoAcceptableOfferError when no offer is in a token we pay with, and
        PolicyViolationError (with every reason) when such offers exist but break the policy.
        """
        reasons: list[str] = []
        candidates: list[tuple[tuple[int, int], PaymentRequirements]] = []
        order = {lim.asset.key: i for i, lim in enumerate(self.policy.limits)}
        for offer in offers:
            limit = self.policy.limit_for(offer)
            if offer.scheme not in schemes or limit is None:
                continue
            why = self._why_not(offer, limit)
            if why:
                reasons.append(why)
            else:
                rank = (list(schemes).index(offer.scheme), order[limit.asset.key])
                candidates.append((rank, offer))
        if candidates:
            return min(candidates, key=lambda c: c[0])[1]
        if reasons:
            raise PolicyViolationError("payment refused by spending policy: " + "; ".join(reasons))
        asked = ", ".join(f"{o.scheme} {o.asset} on {o.network}" for o in offers) or "nothing"
        raise NoAcceptableOfferError(
            f"no offer is payable with our tokens (server accepts {asked})"
        )

    def _why_not(self, offer: PaymentRequirements, limit: AssetLimit) -> str | None:
        asset = limit.asset
        if offer.max_timeout_seconds > MAX_AUTHORIZATION_SECONDS:
            return (
                f"the server asks for an authorization valid for {offer.max_timeout_seconds} "
                f"seconds; at most {MAX_AUTHORIZATION_SECONDS} are signed"
            )
        if (
            self.policy.allowed_payees is not None
            and offer.pay_to not in self.policy.allowed_payees
        ):
            return f"payee {offer.pay_to} is not allowed"
        if offer.amount > limit.max_per_payment:
            return (
                f"{asset.format(offer.amount)} exceeds the per-payment cap of "
                f"{asset.format(limit.max_per_payment)}"
            )
        if offer.amount > self.remaining(asset):
            return (
                f"{asset.format(offer.amount)} exceeds the remaining budget of "
                f"{asset.format(self.remaining(asset))}"
            )
        return None

    def reserve(self, offer: PaymentRequirements) -> None:
        """Hold `offer.amount` against the budget; raise PolicyViolationError if it won't fit."""
        limit = self.policy.limit_for(offer)
        if limit is None:
            raise NoAcceptableOfferError(f"we do not pay with {offer.asset} on {offer.network}")
        if offer.amount > limit.max_per_payment or not self.tally.try_reserve(
            limit.asset.key, offer.amount, limit.budget
        ):
            raise PolicyViolationError(
                f"{limit.asset.format(offer.amount)} would exceed the budget"
            )

    def commit(self, offer: PaymentRequirements, *, reserved: bool = True) -> None:
        """The server confirmed the payment: move the reservation to spent. `reserved=False`
        counts a payment signed before this `Spending` existed (resent after a restart)."""
        self.tally.commit((offer.network, offer.asset), offer.amount, reserved=reserved)

    def release(self, offer: PaymentRequirements) -> None:
        """The server refused the payment (so it was not charged): drop the reservation."""
        self.tally.release((offer.network, offer.asset), offer.amount)
