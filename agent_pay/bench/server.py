"""The server under test, in its own process: chain, facilitator and content server, one worker.

`BenchServer` starts a child process (`spawn`) that builds the stack as `agent-pay demo` does —
embedded py-evm chain, in-process facilitator, the FastAPI app on uvicorn with one worker — and
serves it on 127.0.0.1; the chain itself in a process of its own (`ProcessChain`, the default)
or in the server's (`--chain embedded`). The benchmark talks to it two ways: HTTP load from
the load generator's process, and a control pipe for what HTTP cannot tell (mint to agents,
read receipts and balances, start the stock x402 server beside ours). The child's memory is
read from `/proc/<pid>/status`, so it counts the server alone; the CPU of the chain's process
is measured apart.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_pay.assets import Asset
from agent_pay.bench.children import sigint_ignored

__all__ = ["BenchServer", "MemoryReading", "SettlementInfo", "read_memory"]

_START_TIMEOUT = 120.0
_CALL_TIMEOUT = 600.0


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """Resident memory of a process, in MiB: now (VmRSS) and its peak so far (VmHWM)."""

    rss_mib: float
    peak_mib: float


def read_memory(pid: int) -> MemoryReading | None:
    """Read `/proc/<pid>/status`; None where there is no procfs (not Linux) or no process."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    values: dict[str, float] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024  # kB -> MiB
    if "VmRSS" not in values:
        return None
    return MemoryReading(values["VmRSS"], values.get("VmHWM", values["VmRSS"]))


@dataclass(frozen=True, slots=True)
class SettlementInfo:
    """What the chain says about one settlement transaction."""

    tx_hash: str
    status: bool
    gas_used: int
    block_number: int


class _Controller:
    """Runs in the server process: answers the benchmark's control calls."""

    def __init__(self, schemes: Sequence[str], chain: str = "process") -> None:
        from agent_pay.bench.schemes import build_stack
        from agent_pay.chain.process import ProcessChain

        options: dict[str, Any] = {}
        if "channel" in schemes:
            from agent_pay.assembly.channels import ChannelOptions

            # Claims happen when the benchmark asks (after each paid phase), so that their gas
            # is counted against the reads they settle; not on the settler's own timer.
            options["channel_options"] = ChannelOptions(
                settle_every_seconds=24 * 3600, settle_every_vouchers=10**9
            )
        self._exits = ExitStack()
        if chain == "process":
            options["chain"] = self._exits.enter_context(ProcessChain())
        self.stack = build_stack(schemes, **options)
        self._exits.callback(self.stack.close)  # before the chain, after the servers stopped

    def serve(self) -> str:
        url: str = self._exits.enter_context(self.stack.serve())
        return url

    def close(self) -> None:
        self._exits.close()

    # -- control calls (the names are the wire protocol)

    def fund(self, addresses: list[str], funds: dict[str, str]) -> None:
        self.stack.fund_many(addresses, dict(funds))

    def block_number(self) -> int:
        return self.stack.chain.block_number()

    def chain_pid(self) -> int | None:
        """The chain's own process (None: the chain runs in this one)."""
        pid = getattr(self.stack.chain, "pid", None)
        return None if pid is None else int(pid)

    def balance(self, address: str, symbol: str) -> int:
        return self.stack.balance(address, symbol)

    def settlements(self, tx_hashes: list[str]) -> list[SettlementInfo | None]:
        out: list[SettlementInfo | None] = []
        for tx in tx_hashes:
            receipt = self.stack.chain.get_receipt(bytes.fromhex(tx.removeprefix("0x")))
            out.append(
                None
                if receipt is None
                else SettlementInfo(tx, receipt.status, receipt.gas_used, receipt.block_number)
            )
        return out

    def block_stats(self, first: int, last: int) -> list[tuple[int, int]]:
        """(transactions, gas used) of each block in [first, last]."""
        in_child = getattr(self.stack.chain, "block_stats", None)
        if in_child is not None:
            stats: list[tuple[int, int]] = in_child(first, last)
            return stats
        evm = getattr(self.stack.chain, "evm", None)
        if evm is None:
            return []
        stats = []
        for number in range(first, last + 1):
            block = evm.get_canonical_block_by_number(number)
            stats.append((len(block.transactions), int(block.header.gas_used)))
        return stats

    def asset(self, symbol: str) -> Asset:
        return self.stack.tokens[symbol].asset

    def claim_channels(self) -> int:
        """Claim every channel voucher due now; the gas it took."""
        from agent_pay.bench.schemes import claim_channels

        return claim_channels(self.stack)

    def author(self, slug: str) -> str:
        article = self.stack.catalogue.get(slug)
        if article is None:
            raise KeyError(f"no article {slug!r} in the catalogue")
        return article.author

    def start_stock(self, slug: str) -> str:
        """Serve the stock x402 server (and facilitator) for `slug` on this chain; its URL."""
        from agent_pay.bench.stock import create_stock_app
        from agent_pay.serving import serve_app

        app = create_stock_app(self.stack, slug)
        url: str = self._exits.enter_context(serve_app(app))
        return url


def _child(conn: Any, schemes: list[str], chain: str) -> None:
    try:
        controller = _Controller(schemes, chain)
        url = controller.serve()
    except BaseException as exc:
        conn.send(("failed", _describe(exc)))
        return
    conn.send(("ready", url))
    try:
        while True:
            try:
                command, args = conn.recv()
            except EOFError:
                return  # the benchmark went away
            if command == "stop":
                conn.send(("ok", None))
                return
            try:
                method: Callable[..., Any] = getattr(controller, command)
                conn.send(("ok", method(*args)))
            except BaseException as exc:
                conn.send(("failed", _describe(exc)))
    finally:
        controller.close()


def _describe(exc: BaseException) -> str:
    return (
        "".join(traceback.format_exception_only(type(exc), exc)).strip()
        + "\n"
        + ("".join(traceback.format_tb(exc.__traceback__)[-3:]))
    )


class BenchServer:
    """The content server in a child process, and the pipe that controls it.

    Use as a context manager; `url` is the server's base URL once entered.
    """

    def __init__(self, schemes: Sequence[str] = ("exact",), chain: str = "process") -> None:
        self.schemes = list(schemes)
        self.chain = chain
        self.chain_pid: int | None = None  # the chain's own process, once started
        self._ctx = mp.get_context("spawn")
        self._conn: Any = None
        self._proc: Any = None
        self._lock = threading.Lock()
        self.url = ""

    @property
    def pid(self) -> int:
        return int(self._proc.pid)

    def __enter__(self) -> BenchServer:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(
            target=_child,
            args=(child, self.schemes, self.chain),
            name="agent-pay-bench-server",
            daemon=True,
        )
        with sigint_ignored():  # Ctrl-C is the parent's to handle: it stops this child
            self._proc.start()
        child.close()
        self._conn = parent
        if not parent.poll(_START_TIMEOUT):
            self.close()
            raise RuntimeError("the benchmark server did not start in time")
        try:
            kind, value = parent.recv()
        except EOFError:
            kind, value = "failed", f"the process exited (code {self._proc.exitcode})"
        if kind != "ready":
            self.close()
            raise RuntimeError(f"the benchmark server failed to start: {value}")
        self.url = str(value)
        self.chain_pid = self.call("chain_pid")
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            if self._proc.is_alive() and self._conn is not None:
                self._conn.send(("stop", ()))
                if self._conn.poll(15):
                    self._conn.recv()
        except (OSError, EOFError):
            pass
        self._proc.join(timeout=15)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=5)
        self._proc = None

    def call(self, command: str, *args: Any) -> Any:
        """Run `_Controller.<command>(*args)` in the server process; return its result."""
        with self._lock:
            self._conn.send((command, args))
            if not self._conn.poll(_CALL_TIMEOUT):
                raise TimeoutError(f"the benchmark server did not answer {command!r}")
            kind, value = self._conn.recv()
        if kind != "ok":
            raise RuntimeError(f"{command} failed in the benchmark server: {value}")
        return value

    def memory(self) -> MemoryReading | None:
        return read_memory(self.pid) if self._proc is not None else None


@contextmanager
def bench_server(schemes: Sequence[str] = ("exact",)) -> Iterator[BenchServer]:
    with BenchServer(schemes) as server:
        yield server
