"""`PaymentAuth` under an `httpx.AsyncClient`: the store's writes and the flow's lock waits run
in worker threads, so the event loop keeps running while they take their time; and concurrent
reads pay exactly once each, as they do with the sync client.

The store is the one part replaced: `SlowReceipts` is the real SQLite `ReceiptStore`, each
write made slow (a blocking sleep, as an fsync on a busy disk would be) and timed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any

import httpx
import pytest

from agent_pay.client.receipts import ReceiptStore
from agent_pay.protocol import PaymentRequirements
from agent_pay.testing import TestAgent, Testbed

WRITE_SECONDS = 0.25
TICK_SECONDS = 0.01


class SlowReceipts(ReceiptStore):
    """A `ReceiptStore` whose pending-payment writes block for `WRITE_SECONDS` each, and that
    notes when each one ran."""

    delay = WRITE_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[tuple[float, float]] = []  # (start, end), perf_counter seconds

    def add_pending(
        self, url: str | httpx.URL, payer: str, header: str, offer: PaymentRequirements
    ) -> None:
        self._slowly(lambda: super(SlowReceipts, self).add_pending(url, payer, header, offer))

    def resolve_pending(self, url: str | httpx.URL, payer: str, header: str) -> None:
        self._slowly(lambda: super(SlowReceipts, self).resolve_pending(url, payer, header))

    def _slowly(self, write: Callable[[], None]) -> None:
        start = time.perf_counter()
        time.sleep(self.delay)
        write()
        self.writes.append((start, time.perf_counter()))


@pytest.fixture(scope="module")
def bed() -> Testbed:
    return Testbed.create()


def _agent(bed: Testbed) -> tuple[TestAgent, SlowReceipts]:
    receipts = SlowReceipts.in_memory()
    assert isinstance(receipts, SlowReceipts)
    return bed.agent(receipts=receipts), receipts


def _slugs(bed: Testbed) -> list[str]:
    return [article.slug for article in bed.catalogue]


@pytest.mark.anyio
async def test_the_event_loop_keeps_running_while_the_store_writes(bed: Testbed) -> None:
    agent, receipts = _agent(bed)
    ticks: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        while not done.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(TICK_SECONDS)

    async def read_all() -> list[httpx.Response]:
        try:
            async with bed.async_client(agent) as http:
                slugs = _slugs(bed)[:3]
                return await asyncio.gather(*(http.get(f"/articles/{s}") for s in slugs))
        finally:
            done.set()

    beat = asyncio.create_task(heartbeat())
    responses = await read_all()
    await beat

    assert [r.status_code for r in responses] == [200] * 3
    assert len(receipts.writes) == 6  # each paid read: its pending header, then resolved
    # During every slow write the loop went on ticking: on the loop, a write would stop it
    # for WRITE_SECONDS (no tick inside at all).
    for start, end in receipts.writes:
        inside = [t for t in ticks if start < t < end]
        assert len(inside) >= (WRITE_SECONDS / TICK_SECONDS) / 3, (start, end, len(inside))
    gaps = [b - a for a, b in pairwise(ticks)]
    assert max(gaps) < WRITE_SECONDS / 2


def _read_concurrently(bed: Testbed, agent: TestAgent, slugs: list[str], mode: str) -> list[int]:
    if mode == "async":

        async def read() -> list[int]:
            async with bed.async_client(agent) as http:
                responses = await asyncio.gather(*(http.get(f"/articles/{s}") for s in slugs))
            return [r.status_code for r in responses]

        return asyncio.run(read())
    with bed.client(agent) as http, ThreadPoolExecutor(len(slugs)) as pool:
        return [r.status_code for r in pool.map(lambda s: http.get(f"/articles/{s}"), slugs)]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_concurrent_reads_pay_exactly_once_each(bed: Testbed, mode: str) -> None:
    agent, receipts = _agent(bed)
    receipts.delay = 0.02
    slugs = _slugs(bed)
    before = {s: bed.balance(agent.address, s) for s in bed.tokens}

    assert _read_concurrently(bed, agent, slugs, mode) == [200] * len(slugs)

    paid = sorted(p.url.rsplit("/", 1)[-1] for p in agent.auth.payments)
    assert paid == sorted(slugs)  # one payment per article
    assert len({p.transaction for p in agent.auth.payments}) == len(slugs)
    assert receipts.all_pending() == []
    for symbol, token in bed.tokens.items():
        total = sum(
            p.offer.amount for p in agent.auth.payments if p.offer.asset == token.asset.address
        )
        assert before[symbol] - bed.balance(agent.address, symbol) == total
        assert agent.spending.spent(token.asset) == total
        assert agent.spending.committed_or_reserved(token.asset) == total  # nothing left held

    # All of them again at once: every one is re-read by key proof, nothing paid.
    assert _read_concurrently(bed, agent, slugs, mode) == [200] * len(slugs)
    assert len(agent.auth.payments) == len(slugs)
    assert sorted(agent.auth.rereads) == sorted(str(p.url) for p in agent.auth.payments)
