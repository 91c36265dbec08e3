"""The settler: redeems the payee's best vouchers on chain, many channels per transaction.

A background thread runs a *round* every `every_seconds`, or sooner once `every_vouchers` new
vouchers were accepted, or at once when a payer asks to close a channel (the grace period is
the payee's last chance to claim), and a last one on `close()`. A round takes every channel
whose highest accepted voucher is above what was claimed, sorts them by (payee, token) so that
`claim_many` pays each payee once per token, and sends them in batches of `batch_size`.

It submits each channel's highest voucher exactly as the payer signed it: it can never claim
more than the payer signed. What the contract refuses comes back as `ClaimSkipped` events, not a
revert: the settler logs each, re-reads that channel and keeps its account consistent
(someone else redeemed it first: fine; closed: nothing more to claim). A batch that fails as a
whole (node down, a revert) is left for the next round.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from agent_pay.chain.base import ChainError, Receipt
from agent_pay.chain.channel import (
    MAX_CLAIMS,
    ChannelManager,
    ChannelStatus,
    Claimed,
    ClaimSkipped,
    SkipReason,
    VoucherClaim,
)
from agent_pay.chain.contract import Transactor
from agent_pay.facilitator.channel.book import ChannelAccount
from agent_pay.signing.voucher_check import VoucherChecker

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_EVERY_SECONDS",
    "DEFAULT_EVERY_VOUCHERS",
    "ChannelSettler",
    "SettleRound",
]

log = logging.getLogger(__name__)

DEFAULT_EVERY_VOUCHERS: Final = 5_000
DEFAULT_EVERY_SECONDS: Final = 60.0
DEFAULT_BATCH_SIZE: Final = 50
_TROUBLE = (ChainError, OSError, TimeoutError)
_CLAIM_GAS_BASE: Final = 60_000
_CLAIM_GAS_EACH: Final = 60_000  # a cold claim costs ~58k alone, ~22.5k each in a batch


@dataclass
class SettleRound:
    """What one round did."""

    transactions: list[str] = field(default_factory=list)
    gas_used: int = 0
    claimed: int = 0  # vouchers redeemed
    amount: int = 0  # paid to payees in all
    skipped: list[ClaimSkipped] = field(default_factory=list)
    failed_batches: int = 0


class ChannelSettler:
    """Claims accepted vouchers in batches, from `transactor`'s account (which pays the gas).

    Args:
        manager: the channel contract.
        transactor: the account that sends the claims (anyone may; the payee is paid).
        accounts: the live map of channel id -> account.
        on_change: called with each account a round changed (to persist it).
        every_vouchers / every_seconds: when to run a round.
        batch_size: channels per `claim_many` (at most 100).
        checker: fixes the `v` of vouchers accepted by verification (see `VoucherChecker`).
        before_round: called before each full round (on a shared store: take the channels
            whose holder stopped before it claimed them, `ChannelAccounts.adopt_orphans`).
    """

    def __init__(
        self,
        manager: ChannelManager,
        transactor: Transactor,
        accounts: Mapping[bytes, ChannelAccount],
        *,
        on_change: Callable[[ChannelAccount], None] = lambda _: None,
        checker: VoucherChecker | None = None,
        every_vouchers: int = DEFAULT_EVERY_VOUCHERS,
        every_seconds: float = DEFAULT_EVERY_SECONDS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        receipt_timeout: float = 60.0,
        before_round: Callable[[], object] = lambda: None,
    ) -> None:
        if not 0 < batch_size <= MAX_CLAIMS:
            raise ValueError(f"batch_size must be 1 to {MAX_CLAIMS}")
        self.manager = manager
        self.transactor = transactor
        self.accounts = accounts
        self.on_change = on_change
        self.checker = checker
        self.every_vouchers = every_vouchers
        self.every_seconds = every_seconds
        self.batch_size = batch_size
        self.receipt_timeout = receipt_timeout
        self.before_round = before_round
        self.rounds: list[SettleRound] = []
        self._accepted = 0  # vouchers accepted since the last round
        self._urgent: set[bytes] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._round_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- signals (cheap: called on the hot path)

    def accepted(self) -> None:
        """One more voucher accepted; wakes the settler every `every_vouchers`."""
        self._accepted += 1  # a lost increment under a race only delays a round
        if self._accepted >= self.every_vouchers:
            self._wake.set()

    def urgent(self, account: ChannelAccount) -> None:
        """Claim `account` now (its payer asked to close)."""
        self._urgent.add(account.channel_id)
        self._wake.set()

    # -- a round

    def due(self) -> list[ChannelAccount]:
        """The channels with an accepted voucher above what was claimed, by (payee, token)."""
        due = []
        for account in list(self.accounts.values()):
            with account.lock:
                if account.highest > account.claimed and account.status < ChannelStatus.CLOSED:
                    due.append(account)
        # Channel id breaks ties: the order (so the claim calldata) must not depend on timing.
        due.sort(key=lambda a: (a.payee, a.token, a.channel_id))
        return due

    def settle(self, only: Iterable[bytes] | None = None) -> SettleRound:
        """Run one round now (in the calling thread): claim every due channel, or only those
        in `only`. Returns what it did; a failed batch is counted and left for later."""
        with self._round_lock:
            self._accepted = 0
            wanted = set(only) if only is not None else None
            if wanted is None:
                self.before_round()
            due = [a for a in self.due() if wanted is None or a.channel_id in wanted]
            outcome = SettleRound()
            for start in range(0, len(due), self.batch_size):
                self._claim_batch(due[start : start + self.batch_size], outcome)
            if due:
                self.rounds.append(outcome)
                log.info(
                    "settled %d channel(s) in %d transaction(s), %d gas, %d skipped",
                    outcome.claimed,
                    len(outcome.transactions),
                    outcome.gas_used,
                    len(outcome.skipped),
                )
            return outcome

    def _claim_batch(self, batch: list[ChannelAccount], outcome: SettleRound) -> None:
        claims = []
        for account in batch:
            with account.lock:
                voucher = (account.channel_id, account.highest, account.signature)
                # Public once sent: its replays read nothing from here on (see ChannelAccount).
                account.exposed = max(account.exposed, account.highest)
            signature = voucher[2]
            if self.checker is not None:  # a verified voucher may carry the other `v`
                signature = self.checker.normalized(*voucher, account.signers)
            claims.append(VoucherClaim(voucher[0], voucher[1], signature))
        gas = _CLAIM_GAS_BASE + _CLAIM_GAS_EACH * len(claims)
        try:
            receipt = self.manager.claim_many(self.transactor, claims, gas=gas, check=False)
        except _TROUBLE as exc:
            log.warning("claim of %d channel(s) not sent (%s); will retry", len(claims), exc)
            outcome.failed_batches += 1
            return
        outcome.transactions.append(receipt.tx_hash_hex)
        outcome.gas_used += receipt.gas_used
        if not receipt.status:
            log.error("claim_many reverted (%s); will retry", receipt.revert_reason)
            outcome.failed_batches += 1
            return
        self._record(receipt, outcome)

    def _record(self, receipt: Receipt, outcome: SettleRound) -> None:
        for event in self.manager.events(receipt):
            account = self.accounts.get(event.channel_id)
            if account is None:
                continue
            if isinstance(event, Claimed):
                with account.lock:
                    if event.cumulative_amount > account.claimed:
                        account.claimed = event.cumulative_amount
                        account.version += 1
                outcome.claimed += 1
                outcome.amount += event.amount
                self.on_change(account)
            elif isinstance(event, ClaimSkipped):
                outcome.skipped.append(event)
                self._skipped(account, event)

    def _skipped(self, account: ChannelAccount, event: ClaimSkipped) -> None:
        level = logging.WARNING
        if event.reason in (SkipReason.BAD_SIGNATURE, SkipReason.OVER_DEPOSIT):
            level = logging.ERROR  # we checked both before accepting: a bug, or a rogue chain
        log.log(
            level,
            "claim of channel 0x%s at %d skipped: %s",
            account.channel_id.hex(),
            event.cumulative_amount,
            event.reason.name,
        )
        try:
            state = self.manager.channel(account.channel_id)
        except _TROUBLE:
            return
        if state.status is not ChannelStatus.NONE and account.refresh(state):
            self.on_change(account)

    # -- background

    def start(self) -> None:
        """Run rounds in a daemon thread (idempotent)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="agent-pay-channel-settler", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(max(0.0, last + self.every_seconds - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                break
            urgent, self._urgent = self._urgent, set()
            due_by_time = time.monotonic() >= last + self.every_seconds
            try:
                if due_by_time or self._accepted >= self.every_vouchers:
                    self.settle()
                    last = time.monotonic()
                elif urgent:
                    self.settle(urgent)
            except Exception:
                log.exception("settlement round failed; will retry")
                last = time.monotonic()

    def close(self, *, final_round: bool = True) -> SettleRound | None:
        """Stop the thread and, unless told not to, claim everything still due."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=max(30.0, self.receipt_timeout))
            self._thread = None
        if not final_round:
            return None
        try:
            return self.settle()
        except Exception:
            log.exception("final settlement round failed")
            return None
