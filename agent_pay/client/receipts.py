"""The agent's own records: receipts of what it bought, and payments whose outcome it missed.

`ReceiptStore` is a small SQLite database in a directory the agent is given
(`receipts.sqlite`), so that both survive a restart:

- a **receipt** (the server-signed `SignedReceipt` from `PAYMENT-RESPONSE`) for each article
  bought, looked up by URL before paying, to re-read it by proving the key instead;
- a **purchase** for each article bought whose answer carried no receipt (a read paid by channel
  voucher: the server signs none per voucher read), so that it is re-read by key proof all the
  same (`bought`); the re-read's answer carries the server's signed receipt;
- a **pending payment**: a signed `PAYMENT-SIGNATURE` header written down *before* it is sent,
  and removed once the server answered it. If the answer never came (timeout, dropped
  connection, crash), the next read of that URL sends the very same header again, which the
  server treats as the same payment: the article, without a second charge.

URLs are keyed by origin and path (no query, no fragment).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx

from agent_pay.client.sqlite_files import connect_shared
from agent_pay.errors import ConfigurationError
from agent_pay.protocol import PaymentRequirements
from agent_pay.protocol.extensions import SignedReceipt

__all__ = [
    "RECEIPTS_FILENAME",
    "PendingPayment",
    "ReceiptStore",
    "StoredPurchase",
    "StoredReceipt",
    "resource_key",
]

RECEIPTS_FILENAME: Final = "receipts.sqlite"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS receipts (
    url         TEXT NOT NULL,
    payer       TEXT NOT NULL,
    transaction_hash TEXT NOT NULL,
    receipt     TEXT NOT NULL,
    stored_at   REAL NOT NULL,
    PRIMARY KEY (url, payer, transaction_hash)
);
CREATE TABLE IF NOT EXISTS pending (
    url         TEXT NOT NULL,
    payer       TEXT NOT NULL,
    header      TEXT NOT NULL,
    offer       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (url, payer, header)
);
CREATE TABLE IF NOT EXISTS purchases (  -- bought, but the answer carried no receipt
    url         TEXT NOT NULL,
    payer       TEXT NOT NULL,
    scheme      TEXT NOT NULL,
    stored_at   REAL NOT NULL,
    PRIMARY KEY (url, payer)
);
"""


def resource_key(url: str | httpx.URL) -> str:
    """`scheme://host[:port]/path` of `url`: what receipts and pending payments are filed by."""
    parsed = httpx.URL(str(url))
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}{parsed.path}"


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    """A receipt as the agent keeps it: where it was bought, and when it was stored."""

    url: str
    receipt: SignedReceipt
    stored_at: float


@dataclass(frozen=True, slots=True)
class StoredPurchase:
    """An article bought without a receipt (by channel voucher): where, by whom, in which
    scheme, and when it was stored."""

    url: str
    payer: str
    scheme: str
    stored_at: float


@dataclass(frozen=True, slots=True)
class PendingPayment:
    """A payment header sent (or about to be) whose answer has not been seen."""

    url: str
    payer: str
    header: str
    offer: PaymentRequirements
    created_at: float


class ReceiptStore:
    """Receipts, purchases and pending payments on SQLite; thread-safe.
    `ReceiptStore.open(directory)` to keep them across restarts, `ReceiptStore.in_memory()` for
    one process's life."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        *,
        path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._db = connection
        self._lock = threading.Lock()
        self._clock = clock
        with self._lock:
            self._db.executescript(_SCHEMA)

    @classmethod
    def open(
        cls, directory: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> ReceiptStore:
        """The store in `directory` (created if needed).

        Raises:
            ConfigurationError: if it cannot be opened.
        """
        path = Path(directory) / RECEIPTS_FILENAME
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = connect_shared(path, _SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(f"cannot open the receipt store {path}: {exc}") from None
        return cls(connection, path=path, clock=clock)

    @classmethod
    def in_memory(cls, *, clock: Callable[[], float] = time.time) -> ReceiptStore:
        connection = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        return cls(connection, clock=clock)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"ReceiptStore({str(self.path) if self.path else ':memory:'})"

    # -- receipts ------------------------------------------------------------------------------

    def add(self, url: str | httpx.URL, receipt: SignedReceipt) -> None:
        """Keep `receipt` for `url` (idempotent)."""
        self._execute(
            "INSERT OR IGNORE INTO receipts VALUES (?, ?, ?, ?, ?)",
            (
                resource_key(url),
                receipt.payer,
                receipt.transaction,
                receipt.to_json(),
                self._clock(),
            ),
        )

    def find(self, url: str | httpx.URL, payer: str) -> StoredReceipt | None:
        """The latest receipt `payer` holds for `url`, if any."""
        rows = self._query(
            "SELECT url, receipt, stored_at FROM receipts WHERE url = ? AND payer = ? "
            "ORDER BY stored_at DESC LIMIT 1",
            (resource_key(url), payer),
        )
        return _stored(rows[0]) if rows else None

    def receipts(self, payer: str | None = None) -> list[StoredReceipt]:
        """Every receipt kept (only `payer`'s, if given), oldest first."""
        if payer is None:
            rows = self._query("SELECT url, receipt, stored_at FROM receipts ORDER BY stored_at")
        else:
            rows = self._query(
                "SELECT url, receipt, stored_at FROM receipts WHERE payer = ? ORDER BY stored_at",
                (payer,),
            )
        return [_stored(row) for row in rows]

    # -- purchases without a receipt -------------------------------------------------------------

    def add_purchase(self, url: str | httpx.URL, payer: str, scheme: str) -> None:
        """Note that `payer` bought `url` (in `scheme`) and got no receipt (idempotent: the
        first purchase is kept)."""
        self._execute(
            "INSERT OR IGNORE INTO purchases VALUES (?, ?, ?, ?)",
            (resource_key(url), payer, scheme, self._clock()),
        )

    def bought(self, url: str | httpx.URL, payer: str) -> bool:
        """Whether `payer` bought `url`, as far as this store knows: it holds a receipt for it,
        or a purchase without one. (The server's records decide whether it re-reads free.)"""
        key = resource_key(url)
        rows = self._query(
            "SELECT 1 FROM receipts WHERE url = ? AND payer = ? "
            "UNION ALL SELECT 1 FROM purchases WHERE url = ? AND payer = ? LIMIT 1",
            (key, payer, key, payer),
        )
        return bool(rows)

    def purchases(self, payer: str | None = None) -> list[StoredPurchase]:
        """Every purchase kept without a receipt (only `payer`'s, if given), oldest first."""
        sql = "SELECT url, payer, scheme, stored_at FROM purchases"
        params: tuple[object, ...] = ()
        if payer is not None:
            sql, params = sql + " WHERE payer = ?", (payer,)
        rows = self._query(sql + " ORDER BY stored_at", params)
        return [StoredPurchase(str(u), str(p), str(s), float(t)) for u, p, s, t in rows]

    # -- pending payments ----------------------------------------------------------------------

    def add_pending(
        self, url: str | httpx.URL, payer: str, header: str, offer: PaymentRequirements
    ) -> None:
        """Write down a payment header before sending it."""
        self._execute(
            "INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?, ?)",
            (resource_key(url), payer, header, offer.to_json(), self._clock()),
        )

    def pending(self, url: str | httpx.URL, payer: str) -> PendingPayment | None:
        """The oldest payment to `url` whose answer was never seen, if any."""
        rows = self._query(
            "SELECT url, payer, header, offer, created_at FROM pending WHERE url = ? AND payer = ? "
            "ORDER BY created_at LIMIT 1",
            (resource_key(url), payer),
        )
        if not rows:
            return None
        url_, payer_, header, offer, created_at = rows[0]
        requirements = PaymentRequirements.from_wire(json.loads(offer))
        return PendingPayment(url_, payer_, header, requirements, created_at)

    def all_pending(self, payer: str | None = None) -> list[PendingPayment]:
        """Every pending payment (only `payer`'s, if given)."""
        rows = self._query(
            "SELECT url, payer, header, offer, created_at FROM pending ORDER BY created_at"
        )
        found = [
            PendingPayment(u, p, h, PaymentRequirements.from_wire(json.loads(o)), c)
            for u, p, h, o, c in rows
        ]
        return [p for p in found if payer is None or p.payer == payer]

    def resolve_pending(self, url: str | httpx.URL, payer: str, header: str) -> None:
        """The server answered this payment (paid or refused): forget it."""
        self._execute(
            "DELETE FROM pending WHERE url = ? AND payer = ? AND header = ?",
            (resource_key(url), payer, header),
        )

    # -- internals -----------------------------------------------------------------------------

    def _execute(self, sql: str, params: tuple[object, ...]) -> None:
        with self._lock:
            self._db.execute(sql, params)

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()


def _stored(row: tuple[Any, ...]) -> StoredReceipt:
    url, receipt, stored_at = row
    return StoredReceipt(str(url), SignedReceipt.from_wire(json.loads(receipt)), float(stored_at))
