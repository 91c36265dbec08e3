"""Checkout's recovery pass: what a crash or a node outage left verified or settling.

`Recovery` is a mixin of `Checkout` (which holds the state it reads, see `_Host`): before the
first request is served, and then in the background while entries remain unresolved, it
resolves every entry left in flight. On a shared store it resolves only its own and those of
instances that stopped (taken over by compare-and-set: of several instances one does each),
and keeps looking every few seconds, for an instance may stop at any time. It only
*observes*: it asks the facilitator to settle only an authorization already used or expired
(which cannot submit anything), records what the chain did, and abandons what was never sent.
See `agent_pay.server.checkout`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Container
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Final, Protocol

import anyio

from agent_pay.errors import AgentPayError, ChainUnavailableError, Reason, SettlementFailedError
from agent_pay.protocol import PaymentPayload, PaymentRequirements, VerifyResponse
from agent_pay.server.guarded_calls import GuardedLedger
from agent_pay.server.ledger import Entry, PaymentKey, PaymentState
from agent_pay.store.protocols import PaymentLedger

__all__ = ["RECONCILE_INTERVAL", "ReconcileReport", "Recovery"]

log = logging.getLogger("agent_pay.server.checkout")  # the logger these messages always used

_ABANDONED = "payment_abandoned"  # failed-row reason: the server stopped before settling

RECONCILE_INTERVAL: Final = 5.0

_USED_OR_EXPIRED = (Reason.NONCE_ALREADY_USED, Reason.VALID_BEFORE_EXPIRED)


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    """What a reconciliation pass did with the entries it found unresolved."""

    settled: int = 0
    failed: int = 0
    unresolved: int = 0

    @property
    def total(self) -> int:
        return self.settled + self.failed + self.unresolved


class _Host(Protocol):
    """What the recovery pass needs from the checkout it is mixed into."""

    ledger: PaymentLedger
    records_submissions: bool
    reconcile_interval: float
    _clock: Callable[[], float]
    _guarded: GuardedLedger
    _reconciled: bool
    _reconciling: bool
    _next_reconcile: float
    _background: set[asyncio.Task[ReconcileReport]]

    @property
    def _flights(self) -> Container[PaymentKey]: ...

    def _flight(self, key: PaymentKey) -> AbstractContextManager[None]: ...

    async def _verify(
        self, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> VerifyResponse: ...

    async def _settle(
        self, key: PaymentKey, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> Entry: ...

    async def reconcile(self) -> ReconcileReport: ...

    async def _resolve(self, entry: Entry) -> PaymentState: ...


class Recovery:
    """The recovery pass of `Checkout` (see the module docstring)."""

    async def ensure_reconciled(self: _Host) -> None:
        """Reconcile once before the first request is served (and again, every few seconds,
        while entries remain unresolved because the chain could not be reached)."""
        if self._reconciled and self._clock() < self._next_reconcile:
            return
        if self._reconciled:  # a later pass for leftovers: do not hold the request up
            if not self._reconciling:
                self._next_reconcile = self._clock() + self.reconcile_interval
                task = asyncio.get_running_loop().create_task(self.reconcile())
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            return
        while self._reconciling:
            await anyio.sleep(0.01)
        if not self._reconciled:
            await self.reconcile()

    async def reconcile(self: _Host) -> ReconcileReport:
        """Resolve every entry left verified or settling (by a crash or a node outage).

        It never submits anything: whoever asked for these payments got no 200, and must not
        be charged for them now.

        An entry this server never sent (verified; settling with no transaction recorded,
        when the facilitator records them) → failed: "abandoned", or the verdict's reason (a
        retry of the same header starts over; an authorization someone else used is claimed
        by its payer with a proof of its key). One that was sent: if its authorization is used
        or expired, settle (idempotent: that finds the earlier transfer and submits nothing)
        → settled or failed; if it is still unused and valid → unresolved, looked at again.
        Entries the chain cannot answer for stay as they are and are counted unresolved.
        """
        self._reconciling = True
        settled = failed = unresolved = 0
        try:
            for entry in await self._guarded.in_flight():
                if entry.key in self._flights:
                    continue  # a live request owns it
                if not await self._guarded.write(self.ledger.take_over, entry.key):
                    continue  # another live instance owns it, or it left flight meanwhile
                try:
                    with self._flight(entry.key):
                        state = await self._resolve(entry)
                except ChainUnavailableError as exc:
                    log.warning("reconcile %s: %s", entry.key, exc)
                    unresolved += 1
                    continue
                if state is PaymentState.SETTLED:
                    settled += 1
                else:
                    failed += 1
        finally:
            self._reconciling = False
            self._reconciled = True
            again = unresolved or self.ledger.shared  # another instance may stop meanwhile
            self._next_reconcile = self._clock() + (self.reconcile_interval if again else 1e18)
        report = ReconcileReport(settled, failed, unresolved)
        if report.total:
            log.info("reconciled the ledger: %s", report)
        return report

    async def _resolve(self: _Host, entry: Entry) -> PaymentState:
        payment, requirements = entry.payment, entry.requirements
        verdict = await self._verify(payment, requirements)
        sent = entry.state is PaymentState.SETTLING and (
            entry.tx_hash is not None or not self.records_submissions
        )
        if not sent:
            # Nothing of ours can move money. If the authorization was used all the same,
            # someone else submitted it: its payer may claim it with a proof of its key.
            if verdict.is_valid:
                reason, message = _ABANDONED, "the server stopped before settling; not charged"
            else:
                reason = verdict.invalid_reason or Reason.INVALID_PAYLOAD
                message = verdict.invalid_message or "payment is not valid"
            await self._guarded.write(self.ledger.failed, entry.key, reason, message)
            return PaymentState.FAILED
        if verdict.invalid_reason not in _USED_OR_EXPIRED or (
            verdict.invalid_reason == Reason.VALID_BEFORE_EXPIRED
            and _may_still_settle(entry, self._clock())
        ):
            raise ChainUnavailableError("the settlement was sent and is not mined yet")
        try:
            await self._settle(entry.key, payment, requirements)
        except SettlementFailedError:
            return PaymentState.FAILED
        return PaymentState.SETTLED


def _may_still_settle(entry: Entry, now: float) -> bool:
    """Whether the sent transaction of `entry` could still be mined: verification calls an
    authorization expired a few seconds early (it must leave time to settle), but the token
    takes it until `validBefore` itself."""
    try:
        valid_before = int(entry.payment.exact_evm().authorization.valid_before)
    except (AgentPayError, ValueError):
        return False
    return now < valid_before + _CLOCK_SKEW


_CLOCK_SKEW: Final = 30.0
"""Seconds a node's block time may run behind this server's clock."""
