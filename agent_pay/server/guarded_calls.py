"""The ledger and the facilitator as checkout calls them: whatever goes wrong below a payment
outcome (a sqlite error, a facilitator that crashes or answers 5xx) becomes a 503
(ChainUnavailableError), never a 500; ledger writes commit off the event loop."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from anyio import to_thread

from agent_pay.errors import AgentPayError, ChainUnavailableError
from agent_pay.protocol import PaymentPayload, PaymentRequirements
from agent_pay.server.ledger import Entry, PaymentKey
from agent_pay.server.refusals import ledger_down
from agent_pay.server.timings import timed
from agent_pay.store.errors import STORE_ERRORS
from agent_pay.store.protocols import PaymentLedger

__all__ = ["GuardedLedger", "facilitate"]

log = logging.getLogger("agent_pay.server.checkout")  # the logger these messages always used

R = TypeVar("R")


async def facilitate(
    call: Callable[[PaymentPayload, PaymentRequirements], Awaitable[R]],
    payment: PaymentPayload,
    requirements: PaymentRequirements,
) -> R:
    """A facilitator call; anything but a payment outcome becomes a 503, never a 500."""
    try:
        with timed(getattr(call, "__name__", "facilitator")):
            return await call(payment, requirements)
    except AgentPayError as exc:
        if exc.status_code >= 500 and not isinstance(exc, ChainUnavailableError):
            raise ChainUnavailableError(exc.message) from exc
        raise
    except Exception as exc:
        log.exception("facilitator failed")
        raise ChainUnavailableError(f"the facilitator failed: {type(exc).__name__}") from exc


class GuardedLedger:
    """Reads and writes of `ledger` whose store errors become a 503 (`ledger_down`)."""

    def __init__(self, ledger: PaymentLedger) -> None:
        self.ledger = ledger
        # A ledger in memory has no fsync to keep off the event loop, and its writes (tens of
        # microseconds) cost less than the hop to a worker thread and back.
        self._writes_inline = getattr(ledger, "path", False) is None
        # A local file is read in microseconds; a shared store is a round trip away, which must
        # not hold up every other request on the event loop.
        self._reads_inline = not ledger.shared

    async def sent(self, key: PaymentKey) -> bool:
        """Whether the ledger heard of a settlement transaction for `key` (see
        `Checkout.records_submissions`)."""
        entry = await self.get(key)
        return entry is not None and entry.tx_hash is not None

    async def get(self, key: PaymentKey) -> Entry | None:
        return await self._read(self.ledger.get, key)

    async def in_flight(self) -> list[Entry]:
        return await self._read(self.ledger.in_flight)

    async def _read(self, method: Callable[..., R], *args: Any) -> R:
        try:
            if self._reads_inline:
                return method(*args)
            return await to_thread.run_sync(partial(method, *args))
        except STORE_ERRORS as exc:
            raise ledger_down(exc) from exc

    async def write(self, method: Callable[..., bool], *args: Any, **kwargs: Any) -> bool:
        # Writes commit with fsync: off the event loop, so one slow disk stalls one request.
        try:
            with timed("ledger"):
                if self._writes_inline:
                    return method(*args, **kwargs)
                return await to_thread.run_sync(partial(method, *args, **kwargs))
        except STORE_ERRORS as exc:
            raise ledger_down(exc) from exc
