"""Where a `Spending` keeps its tally: in memory, or in a small SQLite file that outlives the
process and is shared by every process paying from the same key.

The tally has two parts per token, `spent` (the server confirmed it) and reservations (signed,
or about to be, outcome not yet known). A reservation is written, in one transaction that
first checks the budget, before the payment is signed: a crash at any later step leaves it
standing, so the budget is over-counted, never under-counted. Two processes on one file take
the write lock in turn (`BEGIN IMMEDIATE`), so together they cannot pay past the budget.

A reservation belongs to the `SpendingFile` that made it. A payment signed by an earlier
process (its answer was lost, the header is resent after a restart) is committed with
`reserved=False`: it then takes over one reservation of the same amount left by another
owner, the one that process made, rather than count the money twice.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Protocol

from agent_pay.client.sqlite_files import connect_shared
from agent_pay.errors import ConfigurationError

__all__ = ["SPENDING_FILENAME", "MemoryTally", "SpendingFile", "Tally"]

SPENDING_FILENAME = "spending.sqlite"

TokenKey = tuple[str, str]
"""(network, asset address)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spent (
    payer TEXT NOT NULL, network TEXT NOT NULL, asset TEXT NOT NULL,
    amount TEXT NOT NULL,                       -- atomic units, a decimal string
    PRIMARY KEY (payer, network, asset)
);
CREATE TABLE IF NOT EXISTS reservations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    payer TEXT NOT NULL, network TEXT NOT NULL, asset TEXT NOT NULL,
    amount TEXT NOT NULL, owner TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_by_token ON reservations (payer, network, asset);
"""
_PICK = "SELECT id FROM reservations WHERE payer = ? AND network = ? AND asset = ? AND amount = ? "
_OURS = _PICK + "AND owner = ? ORDER BY id LIMIT 1"
_THEIRS = _PICK + "AND owner != ? ORDER BY id LIMIT 1"


class Tally(Protocol):
    """What `Spending` needs from its storage; each call is atomic."""

    def totals(self, key: TokenKey) -> tuple[int, int]:
        """(spent, reserved) in atomic units."""
        ...

    def try_reserve(self, key: TokenKey, amount: int, budget: int) -> bool:
        """Reserve `amount` if spent + reserved + amount stays within `budget`."""
        ...

    def commit(self, key: TokenKey, amount: int, *, reserved: bool) -> None:
        """Count `amount` spent, dropping the reservation it was held under."""
        ...

    def release(self, key: TokenKey, amount: int) -> None:
        """Drop a reservation of `amount`: it was not charged."""
        ...


class MemoryTally:
    """One process's tally, gone when it ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spent: dict[TokenKey, int] = {}
        self._reserved: dict[TokenKey, int] = {}

    def totals(self, key: TokenKey) -> tuple[int, int]:
        with self._lock:
            return self._spent.get(key, 0), self._reserved.get(key, 0)

    def try_reserve(self, key: TokenKey, amount: int, budget: int) -> bool:
        with self._lock:
            used = self._spent.get(key, 0) + self._reserved.get(key, 0)
            if used + amount > budget:
                return False
            self._reserved[key] = self._reserved.get(key, 0) + amount
            return True

    def commit(self, key: TokenKey, amount: int, *, reserved: bool) -> None:
        with self._lock:
            if reserved:
                self._reserved[key] = self._reserved.get(key, 0) - amount
            self._spent[key] = self._spent.get(key, 0) + amount

    def release(self, key: TokenKey, amount: int) -> None:
        with self._lock:
            self._reserved[key] = self._reserved.get(key, 0) - amount


class SpendingFile:
    """The tally of one payer in `<directory>/spending.sqlite`. Use `SpendingFile.open`."""

    def __init__(self, path: Path, payer: str) -> None:
        self.path = path
        self.payer = payer
        self.owner = uuid.uuid4().hex  # whose reservations are whose, across processes
        self._lock = threading.Lock()
        self._db = connect_shared(path, _SCHEMA)  # a reservation is on disk before we sign

    @classmethod
    def open(cls, directory: str | os.PathLike[str], payer: str) -> SpendingFile:
        """The tally of `payer` kept in `directory` (created if needed).

        Raises:
            ConfigurationError: if it cannot be opened.
        """
        path = Path(directory) / SPENDING_FILENAME
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return cls(path, payer)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(f"cannot open the spending record {path}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def totals(self, key: TokenKey) -> tuple[int, int]:
        with self._lock:
            return self._totals(key)

    def try_reserve(self, key: TokenKey, amount: int, budget: int) -> bool:
        with self._lock, self._transaction():
            spent, reserved = self._totals(key)
            if spent + reserved + amount > budget:
                return False
            self._db.execute(
                "INSERT INTO reservations (payer, network, asset, amount, owner, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (self.payer, *key, str(amount), self.owner, time.time()),
            )
            return True

    def commit(self, key: TokenKey, amount: int, *, reserved: bool) -> None:
        with self._lock, self._transaction():
            # Ours if we reserved it; else one an earlier process left for this payment.
            self._drop_one(key, amount, mine=reserved)
            spent, _ = self._totals(key)
            self._db.execute(
                "INSERT INTO spent (payer, network, asset, amount) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (payer, network, asset) DO UPDATE SET amount = excluded.amount",
                (self.payer, *key, str(spent + amount)),
            )

    def release(self, key: TokenKey, amount: int) -> None:
        with self._lock, self._transaction():
            self._drop_one(key, amount, mine=True)

    def _drop_one(self, key: TokenKey, amount: int, *, mine: bool) -> None:
        row = self._db.execute(
            _OURS if mine else _THEIRS, (self.payer, *key, str(amount), self.owner)
        ).fetchone()
        if row is not None:
            self._db.execute("DELETE FROM reservations WHERE id = ?", (row[0],))

    def _totals(self, key: TokenKey) -> tuple[int, int]:
        where = (self.payer, *key)
        row = self._db.execute(
            "SELECT amount FROM spent WHERE payer = ? AND network = ? AND asset = ?", where
        ).fetchone()
        amounts = self._db.execute(
            "SELECT amount FROM reservations WHERE payer = ? AND network = ? AND asset = ?", where
        ).fetchall()
        return (int(row[0]) if row else 0), sum(int(a) for (a,) in amounts)

    def _transaction(self) -> _Immediate:
        return _Immediate(self._db)


class _Immediate:
    """`BEGIN IMMEDIATE` ... `COMMIT` (or `ROLLBACK` on error): the write lock is taken before
    the budget is read, so no other process can reserve in between."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
