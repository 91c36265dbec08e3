"""Checkout: one paid read, exactly once, through the ledger.

`Checkout.pay` takes a matched payment for one resource and ends in one of three ways: the
read is paid (`Paid`, and the content), the payment is refused (PaymentRejectedError /
SettlementFailedError: 402, nothing charged), or the outcome must wait (ChainUnavailableError:
503 with Retry-After, the payment kept in the ledger). It never returns content unpaid and
never settles a payment twice:

- The ledger row for the payment's key is written before anything is submitted, and every
  transition is a compare-and-set; in this process, one request per key owns the payment
  (a "flight") and identical requests arriving meanwhile wait for its outcome and share it.
- The header alone is the payer's own lost answer only until the article is delivered: a
  payment settled but never delivered is served again on the same header; once delivered
  (and for any authorization this server did not settle itself: on a public chain a settled
  authorization is public), a read needs proof of the payer's key as well
  (`Purchase.payer_proven`). Requests that waited on the one settling share its outcome.
- The content is produced after verification and before settlement: if it cannot be
  produced, the payment is marked failed and nothing is charged.
- Only a request that will answer 200 submits anything. A settlement that fails before its
  transaction was broadcast is marked failed before the 503 goes out; one that fails after
  stays `settling`, and `reconcile()` (at start, then in the background; see `recovery.py`)
  only *observes* it: it asks the facilitator to settle only an authorization already used or
  expired (which cannot submit anything), records what the chain did, and abandons what was
  never sent. A retry of the same header, a new request, may settle it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import anyio

from agent_pay.errors import (
    AgentPayError,
    ChainUnavailableError,
    PaymentRejectedError,
    Reason,
    SettlementFailedError,
)
from agent_pay.facilitator.base import Facilitator
from agent_pay.protocol import (
    PaymentPayload,
    PaymentRequirements,
    VerifyResponse,
)
from agent_pay.server.entitlements import ReceiptIssuer
from agent_pay.server.faults import FaultPlan, FaultPoint
from agent_pay.server.guarded_calls import GuardedLedger, facilitate
from agent_pay.server.ledger import (
    IN_FLIGHT,
    Entry,
    PaymentKey,
    PaymentState,
    fingerprint,
)
from agent_pay.server.purchase import Paid, Purchase
from agent_pay.server.recovery import RECONCILE_INTERVAL, ReconcileReport, Recovery
from agent_pay.server.refusals import produce_content, reason_from, rejection
from agent_pay.server.timings import request_timings, timed
from agent_pay.store.protocols import PaymentLedger

__all__ = [
    "RECONCILE_INTERVAL",
    "Checkout",
    "Paid",
    "Purchase",
    "ReconcileReport",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_NOT_SENT = "settlement_not_sent"  # failed-row reason: the chain failed before broadcast
_PROOF_HEADERS = "AGENT-PAY-ENTITLEMENT, or SIGN-IN-WITH-X"
_POLL_ELSEWHERE = 0.05  # seconds between looks at a payment another instance settles


@dataclass(slots=True)
class _Flight:
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[AgentPayError | None]


class _Again(Exception):
    """The ledger changed under us: look at the entry again."""


class Checkout(Recovery):
    """Runs paid reads through the ledger and the facilitator (see the module docstring).

    Args:
        ledger: the payment ledger.
        facilitator: verifies and settles (idempotently, for recovery to work).
        receipts: signs a receipt for every settled payment.
        faults: where to inject a crash (tests); none by default.
        records_submissions: the facilitator tells the ledger each settlement transaction
            before it is broadcast (`record_submissions`), so an entry `settling` without a
            transaction was never sent. False (a remote facilitator): unknown, so such an
            entry waits until its authorization is used or expires.
        wait_timeout: how long an identical request waits for the one settling (then 503).
        reconcile_interval: while a pass left entries unresolved (the chain was unreachable),
            seconds between further passes, each started in the background by a request.
    """

    def __init__(
        self,
        ledger: PaymentLedger,
        facilitator: Facilitator,
        receipts: ReceiptIssuer,
        *,
        faults: FaultPlan | None = None,
        records_submissions: bool = False,
        wait_timeout: float = 60.0,
        reconcile_interval: float = RECONCILE_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.facilitator = facilitator
        self.receipts = receipts
        self.faults = faults or FaultPlan()
        self.records_submissions = records_submissions
        self.wait_timeout = wait_timeout
        self.reconcile_interval = reconcile_interval
        self._clock = clock
        self._guarded = GuardedLedger(ledger)
        self._flights: dict[PaymentKey, _Flight] = {}
        self._reconciled = False
        self._reconciling = False
        self._next_reconcile = 0.0
        self._background: set[asyncio.Task[ReconcileReport]] = set()

    # -- one paid read -------------------------------------------------------------------------

    async def pay(
        self,
        purchase: Purchase,
        produce: Callable[[], T],
        *,
        timings: dict[str, float] | None = None,
    ) -> Paid[T]:
        """Charge `purchase` at most once and produce the content it pays for.

        `produce` is called after verification and before settlement (if it raises, nothing
        is charged: 503 `content_unavailable`), and again for each replay of a paid payment.
        `timings`, if given, receives each step's total milliseconds (verify, ledger, render,
        settle, wait).
        """
        if timings is not None:
            request_timings.set(timings)
        await self.ensure_reconciled()
        waited = False
        for _ in range(8):
            entry = await self._guarded.get(purchase.key)
            if entry is not None:
                self._check_same(entry, purchase)
                if entry.paid:
                    if not waited:
                        self._check_replayable(entry, purchase)
                    return Paid(entry, produce_content(produce), replayed=True)
            flight = self._flights.get(purchase.key)
            if flight is not None:
                with timed("wait"):
                    await self._wait(purchase.key, flight)
                waited = True  # in flight together with the one that paid: share its answer
                continue
            if entry is not None and not entry.paid and not await self._owned(entry):
                await self._wait_elsewhere(entry)  # another live instance settles it
                waited = True
                continue
            try:
                return await self._own(purchase, entry, produce)
            except _Again:
                continue
        raise ChainUnavailableError(
            "the payment is changing state too fast; retry", Reason.PAYMENT_IN_PROGRESS
        )

    async def delivered(self, key: PaymentKey) -> None:
        """Record that the paid response is handed over (best effort: a settled entry is as
        good; the payer of an entry left settled can still read by its header)."""
        try:
            await self._guarded.write(self.ledger.delivered, key)
        except ChainUnavailableError:
            log.warning("could not record delivery of %s", key)

    def _check_same(self, entry: Entry, purchase: Purchase) -> None:
        if entry.resource != purchase.resource:
            raise PaymentRejectedError(
                "this authorization was already used for another resource",
                Reason.NONCE_ALREADY_USED,
            )
        if entry.fingerprint != fingerprint(purchase.payment) and entry.state is not (
            PaymentState.FAILED
        ):
            raise PaymentRejectedError(
                "this authorization is already used by another payment", Reason.NONCE_ALREADY_USED
            )

    def _check_replayable(self, entry: Entry, purchase: Purchase) -> None:
        if entry.state is PaymentState.SETTLED or purchase.payer_proven:
            return  # paid and never delivered (the payer's lost answer), or the payer itself
        raise PaymentRejectedError(
            "this payment was already used and its article delivered; to read it again, prove "
            f"the paying key ({_PROOF_HEADERS})",
            Reason.NONCE_ALREADY_USED,
        )

    async def _wait(self, key: PaymentKey, flight: _Flight) -> None:
        """Wait for the request settling `key`; re-raise its refusal, if it was refused."""
        try:
            with anyio.fail_after(self.wait_timeout):
                if flight.loop is asyncio.get_running_loop():
                    outcome = await asyncio.shield(flight.done)
                else:  # another event loop (a second test client): poll
                    while self._flights.get(key) is flight:
                        await anyio.sleep(0.01)
                    return
        except TimeoutError:
            raise ChainUnavailableError(
                "the same payment is being settled by another request", Reason.PAYMENT_IN_PROGRESS
            ) from None
        if outcome is not None and outcome.reason is not Reason.CONTENT_UNAVAILABLE:
            raise copy.copy(outcome)

    async def _owned(self, entry: Entry) -> bool:
        """Whether this process may carry `entry` on: it is not in flight, or it is ours or
        its owner stopped (then it is ours now). Only a shared store says no."""
        if entry.state is PaymentState.FAILED or not self.ledger.shared:
            return True
        return await self._guarded.write(self.ledger.take_over, entry.key)

    async def _wait_elsewhere(self, entry: Entry) -> None:
        """Wait while another instance on the shared store settles `entry`: until it leaves
        flight, or its owner stops (a heartbeat missed for the lease) and it is ours."""
        deadline = self._clock() + self.wait_timeout
        with timed("wait"):
            while self._clock() < deadline:
                await anyio.sleep(_POLL_ELSEWHERE)
                now = await self._guarded.get(entry.key)
                if now is None or now.state not in IN_FLIGHT or await self._owned(now):
                    return
        raise ChainUnavailableError(
            "the same payment is being settled by another instance", Reason.PAYMENT_IN_PROGRESS
        )

    async def _own(
        self, purchase: Purchase, entry: Entry | None, produce: Callable[[], T]
    ) -> Paid[T]:
        with self._flight(purchase.key):
            return await self._settle_flow(purchase, entry, produce)

    @contextmanager
    def _flight(self, key: PaymentKey) -> Iterator[None]:
        """This task owns `key` until the block ends; others wait and share its outcome."""
        loop = asyncio.get_running_loop()
        flight = _Flight(loop, loop.create_future())
        self._flights[key] = flight
        outcome: AgentPayError | None = None
        try:
            yield
        except AgentPayError as exc:
            outcome = exc
            if isinstance(exc, ChainUnavailableError):
                # The payment may be left in flight: look again soon, even if nobody retries.
                self._next_reconcile = min(
                    self._next_reconcile, self._clock() + self.reconcile_interval
                )
            raise
        finally:
            del self._flights[key]
            flight.done.set_result(outcome)

    async def _settle_flow(
        self, purchase: Purchase, entry: Entry | None, produce: Callable[[], T]
    ) -> Paid[T]:
        key = purchase.key
        state = entry.state if entry is not None else None
        if state in (None, PaymentState.FAILED):
            state = await self._begin(purchase)
        try:
            content = produce_content(produce)
        except ChainUnavailableError:
            if state is PaymentState.VERIFIED:
                await self._guarded.write(
                    self.ledger.failed,
                    key,
                    Reason.CONTENT_UNAVAILABLE,
                    "the content could not be produced",
                    from_states=(PaymentState.VERIFIED,),
                )
            raise
        if state is PaymentState.VERIFIED:
            if not await self._guarded.write(self.ledger.settling, key):
                raise _Again
            self.faults.hit(FaultPoint.SETTLING)
        # From here the payment may move: see it through even if this request is cancelled.
        with anyio.CancelScope(shield=True):
            settled = await self._settle(key, purchase.payment, purchase.requirements)
        return Paid(settled, content, replayed=False)

    async def _begin(self, purchase: Purchase) -> PaymentState:
        """Verify a payment the ledger does not hold (or holds as failed) and record it."""
        verdict = await self._verify(purchase.payment, purchase.requirements)
        state = PaymentState.VERIFIED
        if not verdict.is_valid:
            if verdict.invalid_reason != Reason.NONCE_ALREADY_USED:
                raise rejection(verdict)
            # Used on chain, not by a settlement of ours: on a public chain anyone can copy a
            # settled authorization, so only its payer may claim it, and only for the article
            # it names. Settling again then finds the transfer and charges nothing more.
            if not purchase.payer_proven:
                raise PaymentRejectedError(
                    "this authorization was already used on chain, not settled by this server; "
                    f"its payer can claim the article it names by proving its key "
                    f"({_PROOF_HEADERS})",
                    Reason.NONCE_ALREADY_USED,
                )
            if purchase.payment.resource is None:
                raise PaymentRejectedError(
                    "this authorization was already used on chain and names no resource: it "
                    "cannot be claimed here",
                    Reason.NONCE_ALREADY_USED,
                )
            state = PaymentState.SETTLING
        self.faults.hit(FaultPoint.VERIFY)
        began = await self._guarded.write(
            self.ledger.begin,
            purchase.key,
            resource=purchase.resource,
            resource_url=purchase.resource_url,
            requirements=purchase.requirements,
            payment=purchase.payment,
            state=state,
        )
        if not began:
            raise _Again
        if state is PaymentState.VERIFIED:
            self.faults.hit(FaultPoint.VERIFIED)
        return state

    async def _settle(
        self, key: PaymentKey, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> Entry:
        """Settle an entry in `settling`; record the outcome; return the settled entry.

        If the chain fails before the settlement was broadcast, the entry is failed before the
        503 goes out (nothing can move: a later request starts over); after, it stays
        `settling` for `reconcile()` to observe."""
        try:
            response = await facilitate(self.facilitator.settle, payment, requirements)
        except ChainUnavailableError as exc:
            # Failed only if no transaction of this payment may be pending: this call sent
            # nothing, and the ledger knows of no earlier one (a retry's may still be mined).
            if not await self._guarded.sent(key) and (
                exc.broadcast is False or (self.records_submissions and exc.broadcast is None)
            ):
                await self._guarded.write(self.ledger.failed, key, _NOT_SENT, exc.message)
            elif exc.transaction is not None and not await self._guarded.sent(key):
                # A remote facilitator says which transaction may still be mined: the ledger
                # holds it before the 503 goes out, as it does for our own settlements.
                await self._guarded.write(self.ledger.record_submission, key, exc.transaction)
            raise
        if not response.success:
            reason = reason_from(response.error_reason, Reason.TRANSACTION_FAILED)
            message = response.error_message or "settlement failed"
            await self._guarded.write(self.ledger.failed, key, reason, message)
            raise SettlementFailedError(message, reason)
        self.faults.hit(FaultPoint.CONFIRMED)
        entry = await self._guarded.get(key)
        if entry is None:  # pragma: no cover - the row was written before settling
            raise ChainUnavailableError("the ledger lost a payment", Reason.LEDGER_UNAVAILABLE)
        if not entry.paid:
            receipt = self.receipts.issue(entry, response.transaction)
            await self._guarded.write(self.ledger.settled, key, response.transaction, receipt)
            entry = await self._guarded.get(key) or entry
        self.faults.hit(FaultPoint.SETTLED)
        return entry

    # -- plumbing ------------------------------------------------------------------------------

    async def _verify(
        self, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> VerifyResponse:
        return await facilitate(self.facilitator.verify, payment, requirements)
