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

The file is opened in WAL mode with `synchronous=FULL`: a flush that returned is on disk.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Final

from agent_pay.facilitator.channel_book import ChannelAccount

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
)
"""


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
        self._db.execute(_SCHEMA)
        self._db_lock = threading.Lock()
        self._dirty: dict[bytes, ChannelAccount] = {}
        self._dirty_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.writes = 0  # snapshots written, for tests and metrics

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
        return [ChannelAccount.restore(json.loads(state)) for (state,) in rows]

    # -- writing

    def mark(self, account: ChannelAccount) -> None:
        """Note that `account` changed; it is written by the next flush. Cheap."""
        with self._dirty_lock:
            self._dirty[account.channel_id] = account

    def flush(self) -> int:
        """Write every dirty account now, in one transaction; return how many."""
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, {}
        if not dirty:
            return 0
        rows = []
        for account in dirty.values():
            state = account.snapshot()
            rows.append(
                (
                    state["channel_id"],
                    state["payee"],
                    state["status"],
                    state["version"],
                    json.dumps(state, separators=(",", ":")),
                )
            )
        try:
            with self._db_lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(
                        "INSERT INTO channels (channel_id, payee, status, version, state) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT(channel_id) DO UPDATE SET "
                        "payee=excluded.payee, status=excluded.status, "
                        "version=excluded.version, state=excluded.state "
                        "WHERE excluded.version >= channels.version",
                        rows,
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error:
            with self._dirty_lock:  # keep them for the next attempt
                for key, account in dirty.items():
                    self._dirty.setdefault(key, account)
            raise
        self.writes += len(rows)
        return len(rows)

    # -- the background writer

    def start(self) -> None:
        """Start writing dirty accounts every `flush_interval` seconds (idempotent)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="agent-pay-channel-store", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except sqlite3.Error:
                log.exception("could not write channel state (will retry)")

    def close(self) -> None:
        """Stop the writer, write what is dirty, close the file."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            self.flush()
        finally:
            with self._db_lock:
                self._db.close()
