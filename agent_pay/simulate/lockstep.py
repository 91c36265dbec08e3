"""A simulated clock, and an embedded chain that mines one block per batch of reads.

`EmbeddedChain` mines by group commit: the first settlement to wait for its receipt mines
whatever is pending at that moment, so which settlements share a block depends on thread timing.
`LockstepChain` instead mines when every read of the current batch is either finished or
waiting for its receipt: a batch of concurrent reads lands in exactly one block, whatever the
threads do. That makes block contents a function of the seed, and large blocks are what py-evm
builds fastest. It is the same py-evm chain underneath; only *when* to mine is decided here, as a
real chain's block interval decides it.

It also makes the order of transactions within a block a function of the seed (see
`LockstepChain`), so two runs build the same chain, block hash for block hash. Reads outside a
batch (deploying, minting, claiming) mine at once, as on `EmbeddedChain`.
"""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar

from agent_pay.chain.base import Receipt
from agent_pay.chain.embedded import EmbeddedChain

__all__ = ["POSITION", "LockstepChain", "SimClock"]


class SimClock:
    """Simulated unix time, moved only by the simulation; callable like `time.time`."""

    def __init__(self, start: float) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def set(self, when: float) -> None:
        with self._lock:
            if when < self._now:
                raise ValueError("simulated time does not go backwards")
            self._now = float(when)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


POSITION: ContextVar[int | None] = ContextVar("agent_pay_lockstep_position", default=None)
"""A read's place in its batch; the simulation sets it in each read's task, and it follows the
read into the worker threads that verify and settle it (context variables do)."""


class LockstepChain(EmbeddedChain):
    """An `EmbeddedChain` that mines once per batch of reads (see the module docstring).

    The simulation calls `begin_batch(n)` before starting `n` reads, sets `POSITION` in each
    read's task, and calls `read_done()` as each finishes. Meanwhile:
    - settlements are *submitted* in position order: a transaction of read `p` is signed only
      once every read before it has submitted its own or finished, so the gas payer's nonces,
      and so every transaction and block, come out the same in every run;
    - settlements waiting for a receipt wait for the batch's block, mined once every
      unfinished read is waiting.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        # One lock, and a condition per thing waited for, so that each event wakes only the
        # threads it concerns: a batch of n reads takes n turns, and waking every waiting
        # position at every turn would cost n² wake-ups per batch.
        self._batch = threading.RLock()
        self._mined = threading.Condition(self._batch)  # settlements waiting for the block
        self._turns: dict[int, threading.Condition] = {}  # position -> its waiting turn
        self._active = 0  # reads of the current batch not finished yet
        self._waiting = 0  # settlements waiting for the batch's block
        self._generation = 0  # bumped each time the waiters are released
        self._passed: set[int] = set()  # positions that submitted or finished
        self._turn = 0  # the first position that has not
        self.batch_blocks = 0  # blocks mined for batches (not for setup)

    def begin_batch(self, reads: int) -> None:
        with self._batch:
            if self._active:
                raise RuntimeError("the previous batch has not finished")
            self._active = reads
            self._passed = set()
            self._turn = 0

    def read_done(self) -> None:
        position = POSITION.get()
        with self._batch:
            self._active -= 1
            if position is not None:
                self._pass(position)
            if not self._active:
                # The batch is over: nobody may wait for a turn any more (a read's thread can
                # outlive its task, which finished it).
                for turn in self._turns.values():
                    turn.notify_all()
                self._turns.clear()
            self._mine_if_all_waiting()

    def fee_params(self) -> tuple[int, int]:
        # A transactor asks for fees just before it takes its lock, assigns a nonce, signs and
        # submits: the place to wait for this read's turn without holding anyone's lock.
        position = POSITION.get()
        if position is not None:
            with self._batch:
                while self._active and position > self._turn:
                    turn = self._turns.get(position)
                    if turn is None:
                        turn = self._turns[position] = threading.Condition(self._batch)
                    turn.wait()
        return super().fee_params()

    def send_raw_transaction(self, raw: bytes) -> bytes:
        try:
            return super().send_raw_transaction(raw)
        finally:
            position = POSITION.get()
            if position is not None:
                with self._batch:
                    self._pass(position)

    def wait_for_receipt(self, tx_hash: bytes, timeout: float = 30.0) -> Receipt:
        with self._batch:
            if self._active and self.get_receipt(tx_hash) is None:
                self._waiting += 1
                generation = self._generation
                self._mine_if_all_waiting()
                deadline = time.monotonic() + timeout
                while self._generation == generation:
                    left = deadline - time.monotonic()
                    timed_out = left <= 0 or not self._mined.wait(left)
                    if timed_out and self._generation == generation:
                        self._waiting -= 1
                        raise TimeoutError("the batch's block was not mined in time")
        return super().wait_for_receipt(tx_hash, timeout)

    def _pass(self, position: int) -> None:
        # Called with `_batch` held. Wakes only the positions whose turn has now come: those
        # the turn moved past or onto (normally one).
        self._passed.add(position)
        first = self._turn + 1
        while self._turn in self._passed:
            self._turn += 1
        for waiting in range(first, self._turn + 1):
            turn = self._turns.pop(waiting, None)
            if turn is not None:
                turn.notify_all()

    def _mine_if_all_waiting(self) -> None:
        # Called with `_batch` held: every unfinished read of the batch is waiting, so nothing
        # else can still join this block.
        if not self._waiting or self._waiting < self._active:
            return
        self._waiting = 0
        mined = 0
        try:
            mined = self.mine()
        finally:
            self._generation += 1
            self.batch_blocks += 1 if mined else 0
            self._mined.notify_all()
