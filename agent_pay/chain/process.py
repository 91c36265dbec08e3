"""The embedded chain on a core of its own: py-evm in a child process, reached over a socket.

    with ProcessChain() as chain:        # starts the child (about a second: py-evm's imports)
        Stack.embedded(chain=chain)      # any `Chain` user, unchanged

In one process, the embedded chain's mining shares the interpreter (the GIL) with everything
else — HTTP, verification, the ledger — so a server can never approach the chain's own rate.
`ProcessChain` implements `Chain` by asking an `EmbeddedChain` hosted in a child process
(`agent_pay.chain.process_host`), so mining runs on another core while this process serves.

Calls are pipelined: each is a small message (`agent_pay.chain.process_wire`) on a socket of
its own (from a pool of them, made at start), so the answer wakes the thread that asked and
no other: no reader thread and no second hand-over of the interpreter per call. Many calls are
in flight together — a thread waiting for a receipt holds no lock and keeps no other call
waiting — and the child mines them by group commit (`expecting()` is forwarded), so
settlements that arrive together share a block. Each transaction still gets its own receipt,
mined before `wait_for_receipt` returns.

The chain lives in the child's memory, as an `EmbeddedChain` lives in its process's: if the
child dies, its history is gone, and every call (those in flight and those after) raises
`ChainProcessError`, a `NodeUnavailableError` — what the facilitator reports as the chain
being unavailable (HTTP 503).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

from agent_pay.chain.base import Log, Receipt
from agent_pay.chain.embedded import DEFAULT_CHAIN_ID, GROUP_SIZE, GROUP_WAIT
from agent_pay.chain.process_wire import (
    WireError,
    dumps,
    error_from_wire,
    loads,
    receipt_from_wire,
)
from agent_pay.chain.rpc_transport import NodeUnavailableError

__all__ = ["ChainProcessError", "ProcessChain"]

_START_TIMEOUT = 120.0


class ChainProcessError(NodeUnavailableError):
    """The chain's process is gone, or did not answer in time."""


class ProcessChain:
    """An `EmbeddedChain` in a child process; implements `agent_pay.chain.Chain`. Thread-safe.

    Args:
        chain_id, group_size, group_wait: the hosted `EmbeddedChain`'s.
        call_timeout: seconds any call but `wait_for_receipt` waits for its answer before it
            raises ChainProcessError (the child is alive but stuck).
        connections: sockets to the child, so calls at once: a call beyond them waits for
            one to come free (more than anyio's 40 worker threads by default).
    """

    def __init__(
        self,
        *,
        chain_id: int = DEFAULT_CHAIN_ID,
        group_size: int = GROUP_SIZE,
        group_wait: float = GROUP_WAIT,
        call_timeout: float = 30.0,
        connections: int = 64,
    ) -> None:
        self.call_timeout = call_timeout
        pairs = [socket.socketpair() for _ in range(connections + 1)]
        theirs = [pair[1].fileno() for pair in pairs]
        args = [str(chain_id), str(group_size), str(group_wait), *map(str, theirs)]
        try:
            self._process = subprocess.Popen(  # noqa: S603 - our own module, no shell
                [sys.executable, "-m", "agent_pay.chain.process_host", *args],
                pass_fds=theirs,
                stdin=subprocess.DEVNULL,
            )
        finally:
            for _, end in pairs:
                end.close()
        conns = [Connection(ours.detach()) for ours, _ in pairs]
        # The first carries the start-up answer and `expecting()`'s announcements, which want
        # no answer; its closing ends the child. Each call takes one of the others for itself.
        self._control = conns[0]
        self._control_lock = threading.Lock()
        self._free = collections.deque(conns[1:])
        self._slots = threading.BoundedSemaphore(connections)
        self._lock = threading.Lock()  # guards `_gone` and the connections' closing
        self._gone: str | None = None
        self._ids = itertools.count(1)  # next() is atomic: no two calls share an id
        if not self._control.poll(_START_TIMEOUT):
            self.close()
            raise ChainProcessError("the chain process did not start in time", maybe_sent=False)
        try:
            _, ok, value, head = loads(self._control.recv_bytes())
        except (EOFError, OSError, WireError, ValueError) as exc:
            self.close()
            raise ChainProcessError(f"the chain process failed to start: {exc}") from exc
        if not ok:
            self.close()
            raise error_from_wire(value)
        self._chain_id = int(value)
        # What the latest answer said of the head: (timestamp, max fee, priority fee).
        self._head: tuple[int, int, int] = head

    @property
    def pid(self) -> int:
        """The chain process's id (its CPU time is the chain's)."""
        return int(self._process.pid)

    # -- the sockets ---------------------------------------------------------------------------

    def _call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        wait = self.call_timeout if timeout is None else timeout
        if not self._slots.acquire(timeout=wait):
            raise ChainProcessError(f"{method}: every connection to the chain process is busy")
        conn = self._free.pop()
        try:
            return self._ask(conn, method, args, wait)
        finally:
            self._free.append(conn)
            self._slots.release()

    def _ask(self, conn: Connection, method: str, args: tuple[Any, ...], wait: float) -> Any:
        """Send one request on `conn`, which this thread alone uses now, and read its answer
        (skipping any answer to an earlier call on it that gave up waiting)."""
        if self._gone is not None:
            raise ChainProcessError(self._gone, maybe_sent=False)
        request_id = next(self._ids)
        try:
            conn.send_bytes(dumps((request_id, method, args)))
        except OSError as exc:
            self._lost(f"the chain process is gone: {exc}")
            gone = f"{method}: the chain process is gone"
            raise ChainProcessError(gone, maybe_sent=False) from exc
        deadline = time.monotonic() + wait
        answer_id = 0
        while answer_id != request_id:
            try:
                ready = conn.poll(max(0.0, deadline - time.monotonic()))
                if ready:
                    answer_id, ok, value, head = loads(conn.recv_bytes())
            except (EOFError, OSError, WireError, ValueError, TypeError) as exc:
                code = self._process.poll()
                why = f"exit code {code}" if code is not None else type(exc).__name__
                self._lost(f"the chain process is gone ({why})")
                raise ChainProcessError(f"{method}: the chain process is gone ({why})") from exc
            if not ready:
                if method == "wait_for_receipt":
                    raise TimeoutError(f"transaction 0x{args[0].hex()} not mined in {wait} s")
                raise ChainProcessError(f"{method}: the chain process did not answer in time")
        if head[0] >= self._head[0]:  # two answers racing lose a newer head only for a
            self._head = head  # moment: the next answer brings it again
        if ok:
            return value
        raise error_from_wire(value)

    def _lost(self, reason: str) -> None:
        """The child is gone: every later call fails at once."""
        with self._lock:
            if self._gone is None:
                self._gone = reason

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the child (closing the first socket ends it) and wait for it."""
        self._lost("the chain process was closed")
        with self._control_lock:
            self._control.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for conn in list(self._free):
            conn.close()

    def __enter__(self) -> ProcessChain:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- Chain ---------------------------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        return self._chain_id

    def block_number(self) -> int:
        return int(self._call("block_number"))

    def latest_timestamp(self) -> int:
        return int(self._call("latest_timestamp"))

    def next_timestamp(self) -> int:
        # As the child reckons it (`EmbeddedChain.next_timestamp`: the later of the head's and
        # the clock, both processes reading this machine's), without asking it.
        return max(self._head[0], int(time.time()))

    def get_balance(self, address: str) -> int:
        return int(self._call("get_balance", address))

    def get_nonce(self, address: str) -> int:
        return int(self._call("get_nonce", address))

    def get_code(self, address: str) -> bytes:
        return bytes(self._call("get_code", address))

    def get_storage_at(self, address: str, slot: int) -> int:
        return int(self._call("get_storage_at", address, slot))

    def call(self, to: str, data: bytes, sender: str | None = None) -> bytes:
        return bytes(self._call("call", to, data, sender))

    def estimate_gas(self, to: str | None, data: bytes, sender: str, value: int = 0) -> int:
        return int(self._call("estimate_gas", to, data, sender, value))

    def fee_params(self) -> tuple[int, int]:
        # As of the latest answer, without asking: the max fee is twice the base fee (plus the
        # tip), and the base fee grows at most 12.5% a block, so it stays good for blocks.
        _, max_fee, priority_fee = self._head
        return max_fee, priority_fee

    def send_raw_transaction(self, raw: bytes) -> bytes:
        return bytes(self._call("send_raw_transaction", raw))

    def get_receipt(self, tx_hash: bytes) -> Receipt | None:
        return receipt_from_wire(self._call("get_receipt", tx_hash))

    def wait_for_receipt(self, tx_hash: bytes, timeout: float = 30.0) -> Receipt:
        receipt = receipt_from_wire(self._call("wait_for_receipt", tx_hash, timeout=timeout))
        assert receipt is not None  # the child answers a wait with a receipt or an error
        return receipt

    def get_logs(
        self,
        address: str,
        topics: Sequence[bytes | None] = (),
        from_block: int = 0,
        to_block: int | None = None,
    ) -> list[Log]:
        found = self._call("get_logs", address, tuple(topics), from_block, to_block)
        return [Log(*entry) for entry in found]

    # -- beyond Chain: what the embedded chain offers too ----------------------------------------

    @contextmanager
    def expecting(self) -> Iterator[None]:
        """`EmbeddedChain.expecting()`, in the child: a block mined meanwhile waits (within
        its group wait) for the transaction this caller is about to send."""
        self._notify("expect", 1)
        try:
            yield
        finally:
            self._notify("expect", -1)

    def _notify(self, method: str, *args: Any) -> None:
        """Send a message that wants no answer; a gone child is noticed by the next call."""
        if self._gone is not None:
            return
        message = dumps((0, method, args))
        with self._control_lock, contextlib.suppress(OSError):
            self._control.send_bytes(message)

    def is_pending(self, tx_hash: bytes) -> bool:
        return bool(self._call("is_pending", tx_hash))

    def mine(self) -> int:
        """Mine what is pending into one block now; how many transactions it held."""
        return int(self._call("mine"))

    def block_stats(self, first: int, last: int) -> list[tuple[int, int]]:
        """(transactions, gas used) of each block in [first, last]."""
        return [(int(n), int(gas)) for n, gas in self._call("block_stats", first, last)]
