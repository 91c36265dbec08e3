"""The embedded chain on a core of its own: py-evm in a child process, reached over a socket.

    with ProcessChain() as chain:        # starts the child (about a second: py-evm's imports)
        Stack.embedded(chain=chain)      # any `Chain` user, unchanged

In one process, the embedded chain's mining shares the interpreter (the GIL) with everything
else — HTTP, verification, the ledger — so a server can never approach the chain's own rate.
`ProcessChain` implements `Chain` by asking an `EmbeddedChain` hosted in a child process
(`agent_pay.chain.process_host`), so mining runs on another core while this process serves.

Calls are pipelined: each is a small message (`agent_pay.chain.process_wire`) tagged with an id,
written at once; one reader thread hands each answer to the thread that asked. Any number of
calls are in flight together — a thread waiting for a receipt holds no lock and keeps no other
call waiting — and the child mines them by group commit (`expecting()` is forwarded), so
settlements that arrive together share a block. Each transaction still gets its own receipt,
mined before `wait_for_receipt` returns.

The chain lives in the child's memory, as an `EmbeddedChain` lives in its process's: if the
child dies, its history is gone, and every call (those in flight and those after) raises
`ChainProcessError`, a `NodeUnavailableError` — what the facilitator reports as the chain
being unavailable (HTTP 503).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
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


class _Slot:
    """Where one call's answer lands: a lock the caller waits on and the reader releases."""

    __slots__ = ("answer", "ready")

    def __init__(self) -> None:
        self.ready = threading.Lock()
        self.ready.acquire()
        self.answer: tuple[bool, Any] = (False, ("chain", "no answer", None))


class ProcessChain:
    """An `EmbeddedChain` in a child process; implements `agent_pay.chain.Chain`. Thread-safe.

    Args:
        chain_id, group_size, group_wait: the hosted `EmbeddedChain`'s.
        call_timeout: seconds any call but `wait_for_receipt` waits for its answer before it
            raises ChainProcessError (the child is alive but stuck).
    """

    def __init__(
        self,
        *,
        chain_id: int = DEFAULT_CHAIN_ID,
        group_size: int = GROUP_SIZE,
        group_wait: float = GROUP_WAIT,
        call_timeout: float = 30.0,
    ) -> None:
        self.call_timeout = call_timeout
        ours, theirs = socket.socketpair()
        args = [str(theirs.fileno()), str(chain_id), str(group_size), str(group_wait)]
        try:
            self._process = subprocess.Popen(  # noqa: S603 - our own module, no shell
                [sys.executable, "-m", "agent_pay.chain.process_host", *args],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._lock = threading.Lock()  # guards the slots, the next id and `_gone`
        self._send_lock = threading.Lock()
        self._slots: dict[int, _Slot] = {}
        self._next_id = 0
        self._gone: str | None = None
        if not self._conn.poll(_START_TIMEOUT):
            self.close()
            raise ChainProcessError("the chain process did not start in time", maybe_sent=False)
        try:
            _, ok, value = loads(self._conn.recv_bytes())
        except (EOFError, OSError, WireError, ValueError) as exc:
            self.close()
            raise ChainProcessError(f"the chain process failed to start: {exc}") from exc
        if not ok:
            self.close()
            raise error_from_wire(value)
        self._chain_id = int(value)
        self._reader = threading.Thread(target=self._read_forever, name="chain-process-reader")
        self._reader.daemon = True
        self._reader.start()

    @property
    def pid(self) -> int:
        """The chain process's id (its CPU time is the chain's)."""
        return int(self._process.pid)

    # -- the pipe ------------------------------------------------------------------------------

    def _call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        slot = _Slot()
        with self._lock:
            if self._gone is not None:
                raise ChainProcessError(self._gone, maybe_sent=False)
            self._next_id += 1
            request_id = self._next_id
            self._slots[request_id] = slot
        try:
            request = dumps((request_id, method, args))
            with self._send_lock:
                self._conn.send_bytes(request)
        except OSError as exc:
            self._lost(f"the chain process is gone: {exc}")
            gone = f"{method}: the chain process is gone"
            raise ChainProcessError(gone, maybe_sent=False) from exc
        wait = self.call_timeout if timeout is None else timeout
        if not slot.ready.acquire(timeout=wait):
            with self._lock:
                self._slots.pop(request_id, None)
            if method == "wait_for_receipt":
                raise TimeoutError(f"transaction 0x{args[0].hex()} not mined in {wait} s")
            raise ChainProcessError(f"{method}: the chain process did not answer in {wait} s")
        ok, value = slot.answer
        if ok:
            return value
        raise error_from_wire(value)

    def _read_forever(self) -> None:
        while True:
            try:
                request_id, ok, value = loads(self._conn.recv_bytes())
            except (EOFError, OSError, WireError, ValueError, TypeError) as exc:
                code = self._process.poll()
                why = f"exit code {code}" if code is not None else type(exc).__name__
                self._lost(f"the chain process is gone ({why})")
                return
            with self._lock:
                slot = self._slots.pop(request_id, None)
            if slot is not None:  # else its caller gave up waiting
                slot.answer = (ok, value)
                slot.ready.release()

    def _lost(self, reason: str) -> None:
        """The child is gone: fail every call in flight, and every later one."""
        with self._lock:
            if self._gone is None:
                self._gone = reason
            slots, self._slots = self._slots, {}
        for slot in slots.values():
            slot.answer = (False, ("chain", reason, None))
            slot.ready.release()

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the child (closing the socket ends it) and wait for it."""
        with self._lock:
            if self._gone is None:
                self._gone = "the chain process was closed"
        self._conn.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

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
        return int(self._call("next_timestamp"))

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
        max_fee, priority_fee = self._call("fee_params")
        return int(max_fee), int(priority_fee)

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
        try:
            with self._send_lock:
                self._conn.send_bytes(message)
        except OSError:
            pass

    def is_pending(self, tx_hash: bytes) -> bool:
        return bool(self._call("is_pending", tx_hash))

    def mine(self) -> int:
        """Mine what is pending into one block now; how many transactions it held."""
        return int(self._call("mine"))

    def block_stats(self, first: int, last: int) -> list[tuple[int, int]]:
        """(transactions, gas used) of each block in [first, last]."""
        return [(int(n), int(gas)) for n, gas in self._call("block_stats", first, last)]
