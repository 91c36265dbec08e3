"""The process that hosts a `ProcessChain`'s embedded chain: py-evm and its group commit run
here, on a core of their own, and answer the parent over one local socket.

Run by `ProcessChain` as `python -m agent_pay.chain.process_host CHAIN_ID GROUP_SIZE
GROUP_WAIT FD...`, one connected socket inherited per file descriptor FD: the parent's calling
threads each use one at a time, so an answer goes straight to the thread that waits for it.
Messages are `process_wire`'s.

Two threads: the reader answers each request as it comes, on whichever socket it came (reads,
submissions, announcements by `expecting()`), and hands receipt waits to the miner, which
mines — group commit, as `EmbeddedChain.wait_for_receipt` does in one process — and answers
every wait its block settled. So a block being built holds up a read or a submission only for
the interpreter's switch interval (5 ms; 0.5 ms measured no better: the miner then yields ten
times as often, and the chain spent more CPU per read), and any number of waits are in flight
at once.
When the parent goes (the first socket closes) the process exits.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import socket
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from multiprocessing.connection import Connection, wait
from typing import Any

from agent_pay.chain.embedded import EmbeddedChain
from agent_pay.chain.process_wire import (
    WireError,
    dumps,
    error_to_wire,
    loads,
    receipt_to_wire,
)

__all__ = ["Host", "main"]


def _log_tuple(log: Any) -> tuple[Any, ...]:
    return (
        log.address,
        log.topics,
        log.data,
        log.log_index,
        log.transaction_hash,
        log.block_number,
    )


class Host:
    """Serves `chain` to the parent at the other ends of `conns` until the first closes."""

    def __init__(self, chain: EmbeddedChain, conns: list[Connection]) -> None:
        self.chain = chain
        self._conns = conns
        self._send_lock = threading.Lock()
        self._waits: queue.SimpleQueue[tuple[Connection, int, bytes] | None] = queue.SimpleQueue()
        self._expected: list[AbstractContextManager[None]] = []
        self._methods: dict[str, Callable[..., Any]] = {
            "block_number": chain.block_number,
            "latest_timestamp": chain.latest_timestamp,
            "next_timestamp": chain.next_timestamp,
            "get_balance": chain.get_balance,
            "get_nonce": chain.get_nonce,
            "get_code": chain.get_code,
            "get_storage_at": chain.get_storage_at,
            "call": chain.call,
            "estimate_gas": chain.estimate_gas,
            "fee_params": chain.fee_params,
            "send_raw_transaction": chain.send_raw_transaction,
            "get_receipt": lambda tx_hash: receipt_to_wire(chain.get_receipt(tx_hash)),
            "get_logs": lambda *args: [_log_tuple(log) for log in chain.get_logs(*args)],
            "is_pending": chain.is_pending,
            "mine": lambda: chain.mine(),
            "block_stats": self._block_stats,
        }

    def run(self) -> None:
        miner = threading.Thread(target=self._mine_forever, name="chain-miner", daemon=True)
        miner.start()
        try:
            self._read_forever()
        finally:
            self._waits.put(None)
            miner.join(timeout=5)

    # -- the reader ----------------------------------------------------------------------------

    def _read_forever(self) -> None:
        first, open_ = self._conns[0], set(self._conns)
        while first in open_:
            for conn in wait(list(open_)):
                assert isinstance(conn, Connection)
                try:
                    data = conn.recv_bytes()
                except (EOFError, OSError):
                    open_.discard(conn)  # the parent gave it up, or went away (the first)
                    continue
                try:
                    request_id, method, args = loads(data)
                    if not isinstance(request_id, int) or not isinstance(method, str):
                        raise WireError("a request is (id, method, args)")
                    args = tuple(args)
                except (WireError, ValueError, TypeError) as exc:
                    print(f"agent-pay chain process: {exc}", file=sys.stderr, flush=True)
                    continue  # not one of ours: nobody to answer, and nothing to do
                self._handle(conn, request_id, method, args)

    def _handle(
        self, conn: Connection, request_id: int, method: str, args: tuple[Any, ...]
    ) -> None:
        if method == "wait_for_receipt" and len(args) == 1 and isinstance(args[0], bytes):
            self._waits.put((conn, request_id, args[0]))
            return
        if method == "expect" and args in ((1,), (-1,)):
            self._expect(args[0])
            return
        function = self._methods.get(method)
        if function is None:
            self._answer(conn, request_id, False, ("chain", f"no such method {method!r}", None))
            return
        try:
            value = function(*args)
        except BaseException as exc:  # every failure is the caller's answer, never our end
            self._answer(conn, request_id, False, error_to_wire(exc))
        else:
            self._answer(conn, request_id, True, value)

    def _expect(self, delta: int) -> None:
        if delta > 0:
            announced = self.chain.expecting()
            announced.__enter__()
            self._expected.append(announced)
        elif self._expected:
            self._expected.pop().__exit__(None, None, None)

    def _answer(self, conn: Connection, request_id: int, ok: bool, value: Any) -> None:
        if not request_id:
            return  # nobody asked for an answer
        message = dumps((request_id, ok, value, self.head()))
        # A parent that went away is the reader's to notice.
        with self._send_lock, contextlib.suppress(OSError):
            conn.send_bytes(message)

    def head(self) -> tuple[int, int, int]:
        """What every answer carries: the latest block's timestamp and the fee parameters."""
        return (self.chain.latest_timestamp(), *self.chain.fee_params())

    def _block_stats(self, first: int, last: int) -> list[tuple[int, int]]:
        """(transactions, gas used) of each block in [first, last]."""
        stats = []
        for number in range(first, last + 1):
            block = self.chain.evm.get_canonical_block_by_number(number)
            stats.append((len(block.transactions), int(block.header.gas_used)))
        return stats

    # -- the miner -----------------------------------------------------------------------------

    def _mine_forever(self) -> None:
        waiting: dict[bytes, list[tuple[Connection, int]]] = {}
        while True:
            item = self._waits.get()
            while item is not None:
                conn, request_id, tx_hash = item
                waiting.setdefault(tx_hash, []).append((conn, request_id))
                try:
                    item = self._waits.get_nowait()
                except queue.Empty:
                    break
            if item is None:
                return
            while waiting:
                self._answer_settled(waiting)
                if waiting:
                    oldest = next(iter(waiting))
                    # Mine (group commit) until `oldest` is in a block. A failure is its
                    # waiters' to hear, next, from `_answer_settled`.
                    with contextlib.suppress(Exception):
                        self.chain.wait_for_receipt(oldest)
                    self._take_new_waits(waiting)

    def _take_new_waits(self, waiting: dict[bytes, list[tuple[Connection, int]]]) -> None:
        while True:
            try:
                item = self._waits.get_nowait()
            except queue.Empty:
                return
            if item is None:
                self._waits.put(None)  # seen by the outer loop once these are answered
                return
            conn, request_id, tx_hash = item
            waiting.setdefault(tx_hash, []).append((conn, request_id))

    def _answer_settled(self, waiting: dict[bytes, list[tuple[Connection, int]]]) -> None:
        """Answer every wait whose transaction was mined or will never be."""
        for tx_hash in list(waiting):
            receipt = self.chain.get_receipt(tx_hash)
            if receipt is not None:
                answer: tuple[bool, Any] = (True, receipt_to_wire(receipt))
            elif self.chain.is_pending(tx_hash):
                continue
            else:
                try:  # dropped or unknown: it says which at once, without mining
                    self.chain.wait_for_receipt(tx_hash)
                except Exception as exc:
                    answer = (False, error_to_wire(exc))
                else:  # mined in between
                    answer = (True, receipt_to_wire(self.chain.get_receipt(tx_hash)))
            for conn, request_id in waiting.pop(tx_hash):
                self._answer(conn, request_id, *answer)


def main(argv: list[str]) -> None:
    chain_id, group_size, group_wait, *fds = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it closes us
    conns = [Connection(socket.socket(fileno=int(fd)).detach()) for fd in fds]
    try:
        chain = EmbeddedChain(
            chain_id=int(chain_id), group_size=int(group_size), group_wait=float(group_wait)
        )
    except BaseException as exc:
        conns[0].send_bytes(dumps((0, False, error_to_wire(exc), (0, 0, 0))))
        raise
    host = Host(chain, conns)
    conns[0].send_bytes(dumps((0, True, chain.chain_id, host.head())))
    host.run()


if __name__ == "__main__":
    main(sys.argv[1:])
