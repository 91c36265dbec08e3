"""A small, fast HTTP/1.1 load generator that runs in its own process.

httpx's connection pool costs more CPU per request than our server spends on a free preview, so
measured with httpx the client, not the server, would set the figures. This speaks just enough
HTTP/1.1 for a benchmark (GET, keep-alive, `Content-Length` bodies) on asyncio (uvloop when
installed), in a separate process started with `spawn`, so it shares no GIL with the server.

Load is bounded twice: by the requests given (each sent at most once) and by `max_seconds`, after
which no new request starts. Requests come in *lanes*: a connection takes a whole lane and sends
its requests in order, one in flight at a time, so payments that must arrive in order (vouchers
of one channel) do; with lanes of one request, any connection takes any request.

    result = run_load(url, [[{}]] * 1000, concurrency=16, max_seconds=30)
    result.rate, result.latency.p99_ms, result.statuses
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing as mp
import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent_pay.bench.children import sigint_ignored

__all__ = ["LatencySummary", "LoadResult", "run_load", "summarize_latencies"]

Headers = dict[str, str]
Lane = Sequence[Headers]

_PROGRESS_EVERY = 0.5  # seconds between the child's progress reports
_STARTUP_TIMEOUT = 60.0  # the child must report within this long after the deadline
_HEAD_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency percentiles in milliseconds (nearest-rank); zeros when nothing completed."""

    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "mean_ms": round(self.mean_ms, 3),
            "p50_ms": round(self.p50_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "max_ms": round(self.max_ms, 3),
        }


def summarize_latencies(seconds: Sequence[float]) -> LatencySummary:
    """Percentiles of `seconds` (one per request), by nearest rank, in milliseconds."""
    if not seconds:
        return LatencySummary(0, 0.0, 0.0, 0.0, 0.0, 0.0)
    ordered = sorted(seconds)
    n = len(ordered)

    def rank(q: float) -> float:
        # Nearest rank: the smallest value with at least q of the samples at or below it.
        index = max(0, min(n - 1, math.ceil(q * n - 1e-9) - 1))
        return ordered[index] * 1000

    return LatencySummary(n, sum(ordered) / n * 1000, rank(0.5), rank(0.9), rank(0.99), rank(1.0))


@dataclass
class LoadResult:
    """What one load run measured, as the child process reports it."""

    seconds: float = 0.0  # from the first request sent to the last answer received
    latencies: list[float] = field(default_factory=list)  # seconds, one per answered request
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0  # requests that got no HTTP answer (connection refused, reset, bad reply)
    error_samples: list[str] = field(default_factory=list)
    unsent: int = 0  # requests not started because the time cap was reached
    payment_responses: list[str] = field(default_factory=list)  # PAYMENT-RESPONSE values
    server_timing: dict[str, float] = field(default_factory=dict)  # step -> total milliseconds
    # CPU time the server process (every thread) spent over the same span, when its pid was given
    server_cpu_seconds: float | None = None
    # ... and the chain's process, when the chain runs in one of its own (`ProcessChain`)
    chain_cpu_seconds: float | None = None
    server_timing_count: int = 0  # answers that carried Server-Timing

    @property
    def completed(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        """Answered requests per second."""
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    @property
    def latency(self) -> LatencySummary:
        return summarize_latencies(self.latencies)

    def server_timing_mean_ms(self) -> dict[str, float]:
        """Mean milliseconds per step over the answers that reported it."""
        if not self.server_timing_count:
            return {}
        return {k: v / self.server_timing_count for k, v in self.server_timing.items()}


def _parse_server_timing(value: str, into: dict[str, float]) -> None:
    for part in value.split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            with contextlib.suppress(ValueError):
                into[name] = into.get(name, 0.0) + float(rest[4:])


def read_cpu_seconds(pid: int) -> float | None:
    """CPU time all threads of process `pid` have run so far, in seconds (nanosecond
    resolution, from `/proc/<pid>/task/*/schedstat`); None without procfs or process."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    total = 0
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text(encoding="ascii").split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total / 1e9


async def _drive(
    url: str,
    lanes: Sequence[Lane],
    concurrency: int,
    max_seconds: float,
    progress: Callable[[int], None] | None,
    server_pid: int | None = None,
    chain_pid: int | None = None,
) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    prefix = f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    next_lane = iter(range(len(lanes)))
    result = LoadResult()
    deadline = time.perf_counter() + max_seconds
    last_answer = 0.0
    first_sent = math.inf  # connections are opened before: their set-up is not a read's
    cpu_at_first: float | None = None
    chain_cpu_at_first: float | None = None

    async def connection() -> None:
        nonlocal last_answer, first_sent, cpu_at_first, chain_cpu_at_first
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        for index in next_lane:
            lane = lanes[index]
            for position, headers in enumerate(lane):
                if time.perf_counter() >= deadline:
                    result.unsent += len(lane) - position
                    continue
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection(host, port)
                    assert reader is not None
                    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                    if first_sent == math.inf and server_pid is not None:
                        cpu_at_first = read_cpu_seconds(server_pid)
                        if chain_pid is not None:
                            chain_cpu_at_first = read_cpu_seconds(chain_pid)
                    start = time.perf_counter()
                    first_sent = min(first_sent, start)
                    writer.write((prefix + extra + "\r\n").encode("latin-1"))
                    status, length, keep_alive = await _read_head(reader, result)
                    await reader.readexactly(length)
                    last_answer = time.perf_counter()
                    result.latencies.append(last_answer - start)
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                    if not keep_alive:
                        writer.close()
                        writer = None
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    result.errors += 1
                    if len(result.error_samples) < 5:
                        result.error_samples.append(f"{type(exc).__name__}: {exc}")
                    if writer is not None:
                        writer.close()
                    writer = None
        if writer is not None:
            writer.close()

    async def report() -> None:
        while True:
            await asyncio.sleep(_PROGRESS_EVERY)
            assert progress is not None
            progress(result.completed + result.errors)

    reporter = asyncio.ensure_future(report()) if progress else None
    try:
        await asyncio.gather(*(connection() for _ in range(max(1, concurrency))))
    finally:
        if reporter is not None:
            reporter.cancel()
    result.seconds = max(last_answer - first_sent, 1e-9) if result.latencies else 0.0
    cpu_at_end = read_cpu_seconds(server_pid) if server_pid is not None else None
    if cpu_at_first is not None and cpu_at_end is not None:
        result.server_cpu_seconds = cpu_at_end - cpu_at_first
    chain_cpu_at_end = read_cpu_seconds(chain_pid) if chain_pid is not None else None
    if chain_cpu_at_first is not None and chain_cpu_at_end is not None:
        result.chain_cpu_seconds = chain_cpu_at_end - chain_cpu_at_first
    return result


async def _read_head(reader: asyncio.StreamReader, result: LoadResult) -> tuple[int, int, bool]:
    """Status, body length and keep-alive of one response; records the headers we collect."""
    status_line = await reader.readline()
    if not status_line:
        raise asyncio.IncompleteReadError(b"", None)
    fields = status_line.split(None, 2)
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    status = int(fields[1])
    length = 0
    keep_alive = fields[0] == b"HTTP/1.1"
    size = len(status_line)
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        size += len(line)
        if size > _HEAD_LIMIT:
            raise ValueError("response head too large")
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        value = value.strip()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and value.lower() != "identity":
            raise ValueError(f"transfer-encoding {value!r} is not supported")
        elif name == "connection":
            keep_alive = value.lower() != "close"
        elif name == "payment-response":
            result.payment_responses.append(value)
        elif name == "server-timing":
            result.server_timing_count += 1
            _parse_server_timing(value, result.server_timing)
    return status, length, keep_alive


def _child(
    url: str,
    lanes: Sequence[Lane],
    concurrency: int,
    max_seconds: float,
    out: Any,
    server_pid: int | None,
    chain_pid: int | None = None,
) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # plain asyncio is fine, just slower
        pass

    def progress(done: int) -> None:
        out.put(("progress", done))

    try:
        result = asyncio.run(
            _drive(url, lanes, concurrency, max_seconds, progress, server_pid, chain_pid)
        )
    except BaseException as exc:  # report, never hang the parent
        out.put(("failed", f"{type(exc).__name__}: {exc}"))
        return
    out.put(("done", result))


def run_load(
    url: str,
    lanes: Sequence[Lane],
    concurrency: int,
    *,
    max_seconds: float = 60.0,
    on_progress: Callable[[int], None] | None = None,
    server_pid: int | None = None,
    chain_pid: int | None = None,
) -> LoadResult:
    """GET `url` once per entry of `lanes` (its headers) from a separate process; wait for it.

    `concurrency` keep-alive connections each take whole lanes and send one request at a time;
    no request starts after `max_seconds`. `on_progress` is called with the number of requests
    answered so far, about twice a second. With `server_pid` (a local process, Linux), the
    result also has the CPU time that process spent from the first request to the last answer;
    with `chain_pid`, that of the chain's own process too.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(
        target=_child,
        args=(
            url,
            [list(lane) for lane in lanes],
            concurrency,
            max_seconds,
            out,
            server_pid,
            chain_pid,
        ),
        name="agent-pay-loadgen",
        daemon=True,
    )
    with sigint_ignored():  # Ctrl-C is the parent's to handle: it stops this child
        proc.start()
    limit = time.monotonic() + max_seconds + _STARTUP_TIMEOUT
    try:
        while True:
            try:
                kind, value = out.get(timeout=0.5)
            except queue.Empty:
                if not proc.is_alive():
                    raise RuntimeError("the load generator exited without a result") from None
                if time.monotonic() > limit:
                    raise TimeoutError("the load generator did not finish in time") from None
                continue
            if kind == "progress":
                if on_progress is not None:
                    on_progress(int(value))
            elif kind == "failed":
                raise RuntimeError(f"the load generator failed: {value}")
            else:
                result: LoadResult = value
                return result
    except BaseException:
        proc.terminate()  # interrupted, or failed: its result is no use now
        raise
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
