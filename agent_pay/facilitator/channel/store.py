"""Where a payee's channel accounts survive a restart: SQLite, written behind the hot path.

Accepting a voucher only marks its channel dirty (a dict insert under a lock held for a few
hundred nanoseconds); a background thread writes every dirty channel's snapshot in one
transaction every `flush_interval` seconds (and at once on `flush()` / `close()`). A paid read
thus never waits for a disk, and a crash loses at most the last `flush_interval` of accepted
vouchers.

What such a loss costs, and whom: the payee, never the payer. The payer still holds what it read
and the payee lost the voucher that paid for it; but vouchers are cumulative, so the payer's next
voucher on the channel covers the forgotten amount again, and the payee loses only if the payer
never reads again. The gap shows up as an unpaid range: after a restart the server accepts the
next voucher and records the skipped range as unpaid (see `channel_book`).

The same goes for the reads those vouchers paid for (`PaidRead`, table `paid_reads`): each is what
entitles its payer to read that resource again for free, and it is written in the *same
transaction* as the snapshot of the channel that accepted its voucher (`snapshot.checkpoint`).
So a voucher and the entitlement it bought survive a crash together or are lost together, never
one without the other; and a lost pair is made good as above: the payer's next voucher leaves the
forgotten slice unpaid and the client pays a later read with it, so a payer that re-reads (and
pays again for) an article whose purchase was lost still pays one price per article, once it
reads on. Until a read is written, its account holds it (`ChannelAccount.unwritten_read`).

The file is opened in WAL mode with `synchronous=FULL`: a flush that returned is on disk.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from functools import lru_cache
from pathlib import Path
from typing import Final

from agent_pay.facilitator.channel.book import ChannelAccount, ReadChange
from agent_pay.facilitator.channel.snapshot import checkpoint, restore
from agent_pay.facilitator.channel.writer import BackgroundWriter

__all__ = ["DEFAULT_FLUSH_INTERVAL", "ChannelStore"]

log = logging.getLogger(__name__)

DEFAULT_FLUSH_INTERVAL: Final = 0.05
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS channels (
    channel_id TEXT PRIMARY KEY,
    payee TEXT NOT NULL,
    status INTEGER NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS paid_reads (  -- payee and token: the channel's
    payer TEXT NOT NULL,
    resource TEXT NOT NULL,         -- the URL path: what entitlements are looked up by
    channel_id TEXT NOT NULL,
    cumulative TEXT NOT NULL,       -- the voucher that paid (decimal: uint256)
    url TEXT NOT NULL,              -- the URL as sold: what the receipt names
    price TEXT NOT NULL,
    at REAL NOT NULL,
    -- One tree, keyed for the look-up: a second index cost each read as much again to write.
    PRIMARY KEY (payer, resource, channel_id, cumulative)
) WITHOUT ROWID;
"""
_ADD_READ: Final = (
    "INSERT OR REPLACE INTO paid_reads (payer, resource, channel_id, cumulative, url, price, at) "
    "VALUES "
)
_READ_ROW: Final = "(?, ?, ?, ?, ?, ?, ?)"
_READ_FIELDS: Final = 7
_ROWS_PER_INSERT: Final = 32
_FIND_READ: Final = (
    "SELECT channel_id, cumulative, url, price, at FROM paid_reads "
    "WHERE payer = ? AND resource = ? ORDER BY at LIMIT 1"
)
_DROP_READ: Final = (
    "DELETE FROM paid_reads WHERE payer = ? AND resource = ? AND channel_id = ? AND cumulative = ?"
)
# Files written before `paid_reads` keep their reads in `reads`, keyed by channel, with a
# second index for the look-up: moved over once, when the file is opened.
_MIGRATE: Final = """
INSERT OR REPLACE INTO paid_reads (payer, resource, channel_id, cumulative, url, price, at)
SELECT payer, resource, channel_id, cumulative, url, price, at FROM reads;
DROP TABLE reads;
"""
_UPSERT: Final = (
    "INSERT INTO channels (channel_id, payee, status, version, state) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(channel_id) DO UPDATE SET "
    "payee=excluded.payee, status=excluded.status, "
    "version=excluded.version, state=excluded.state "
    "WHERE excluded.version >= channels.version"
)


class ChannelStore:
    """Channel accounts in one SQLite file (or in memory), written behind.

    Args:
        target: a file path, or ":memory:" (nothing survives the process).
        flush_interval: seconds between background writes.
    """

    def __init__(self, target: str, *, flush_interval: float = DEFAULT_FLUSH_INTERVAL) -> None:
        self.target = target
        self.flush_interval = flush_interval
        self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        if target != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._migrate()
        self._db_lock = threading.Lock()
        # Entitlement look-ups come from the event loop: on a file they read through their own
        # connection (WAL: never behind a flush's fsync); in memory there is only the one.
        self._reader, self._reader_lock = self._db, self._db_lock
        if target != ":memory:":
            self._reader = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
            self._reader.execute("PRAGMA busy_timeout=5000")
            self._reader_lock = threading.Lock()
        self._dirty: dict[bytes, ChannelAccount] = {}
        self._dirty_lock = threading.Lock()
        self._writer = BackgroundWriter(
            self.flush,
            flush_interval,
            "agent-pay-channel-store",
            retried=(sqlite3.Error,),
            on_error=lambda _: log.exception("could not write channel state (will retry)"),
        )
        self.writes = 0  # snapshots written, for tests and metrics

    def _migrate(self) -> None:
        old = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'reads'"
        ).fetchone()
        if old is not None:
            self._db.executescript(f"BEGIN IMMEDIATE; {_MIGRATE} COMMIT;")

    @classmethod
    def open(
        cls, directory: Path | str, *, flush_interval: float = DEFAULT_FLUSH_INTERVAL
    ) -> ChannelStore:
        """The store in `directory`/channels.sqlite (the directory is created)."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        return cls(str(path / "channels.sqlite"), flush_interval=flush_interval)

    @classmethod
    def in_memory(cls) -> ChannelStore:
        return cls(":memory:")

    def __repr__(self) -> str:
        return f"ChannelStore({self.target!r})"

    # -- reading

    def load(self) -> list[ChannelAccount]:
        """Every channel account stored."""
        with self._db_lock:
            rows = self._db.execute("SELECT state FROM channels").fetchall()
        return [restore(json.loads(state)) for (state,) in rows]

    def paid_read(self, payer: str, resource: str) -> tuple[bytes, int, str, int, float] | None:
        """The earliest written read of `resource` (a URL path) paid by `payer`, if any, as
        (channel, cumulative, url, price, at). (Reads not written yet are their accounts' to
        tell: `ChannelAccount.unwritten_read`.)"""
        with self._reader_lock:
            row = self._reader.execute(_FIND_READ, (payer, resource)).fetchone()
        if row is None:
            return None
        channel, cumulative, url, price, at = row
        return bytes.fromhex(channel[2:]), int(cumulative), url, int(price), float(at)

    def terms(self, channel: bytes) -> tuple[str, str, str] | None:
        """None: every stored channel is loaded, so its terms are known from its account."""
        return None

    # -- writing

    def mark(self, account: ChannelAccount) -> None:
        """Note that `account` changed; it is written by the next flush. Cheap."""
        with self._dirty_lock:
            self._dirty[account.channel_id] = account

    def flush(self) -> int:
        """Write every dirty account now, with the reads its vouchers paid for, in one
        transaction; return how many accounts."""
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, {}
        if not dirty:
            return 0
        rows, taken = [], []
        for account in dirty.values():
            state, text, changes = checkpoint(account)
            rows.append(
                (state["channel_id"], state["payee"], state["status"], state["version"], text)
            )
            taken.append((account, state["channel_id"], changes))
        try:
            with self._db_lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(_UPSERT, rows)
                    for account, channel, changes in taken:
                        if changes:
                            _write_reads(self._db, channel, account.payer, changes)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error:
            for account, _, changes in taken:  # keep them for the next attempt
                account.unwritten(changes)
            with self._dirty_lock:
                for key, account in dirty.items():
                    self._dirty.setdefault(key, account)
            raise
        for account, _, changes in taken:
            account.written(changes)
        self.writes += len(rows)
        return len(rows)

    # -- the background writer

    def start(self) -> None:
        """Start writing dirty accounts every `flush_interval` seconds (idempotent)."""
        self._writer.start()

    def close(self) -> None:
        """Stop the writer, write what is dirty, close the file."""
        self._writer.stop()
        try:
            self.flush()
        finally:
            with self._db_lock:
                self._db.close()
            if self._reader is not self._db:
                with self._reader_lock:
                    self._reader.close()


def _write_reads(
    db: sqlite3.Connection, channel: str, payer: str, changes: list[ReadChange]
) -> None:
    """Apply one channel's read changes in order (a read undone after it was added is
    deleted)."""
    added: list[object] = []
    for cumulative, resource, read in changes:
        if read is not None:
            added += (payer, resource, channel, str(cumulative), read.url, str(read.price), read.at)
            continue
        _add_reads(db, added)
        added = []
        db.execute(_DROP_READ, (payer, resource, channel, str(cumulative)))
    _add_reads(db, added)


def _add_reads(db: sqlite3.Connection, values: list[object]) -> None:
    """Insert rows of `_READ_FIELDS` values, `_ROWS_PER_INSERT` per statement. The writer
    thread holds the GIL while it binds a statement and lets go while SQLite runs it: one row
    per statement would hand the GIL back and forth with the event loop for every row, and
    thousands per statement would hold the event loop up for a millisecond; a few dozen keep
    each hold to some tens of microseconds."""
    width = _ROWS_PER_INSERT * _READ_FIELDS
    for start in range(0, len(values), width):
        chunk = values[start : start + width]
        db.execute(_insert_reads(len(chunk) // _READ_FIELDS), chunk)


@lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_reads(rows: int) -> str:
    return _ADD_READ + ", ".join([_READ_ROW] * rows)
