"""Opening the client's SQLite files (receipts, the spending tally), which several processes of
one user share: ten `agent-pay read`s at once, or `read` beside `agent-pay mcp`."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

__all__ = ["connect_shared"]


def connect_shared(path: Path, schema: str = "", *, timeout: float = 10.0) -> sqlite3.Connection:
    """A connection to the SQLite file at `path` in WAL mode with `synchronous=FULL`, `schema`
    (idempotent DDL) applied, waiting up to `timeout` seconds for other processes.

    Some of what opening takes is refused at once, without SQLite's busy handler, while another
    process holds the file at the wrong moment: switching a new file to WAL, or reading a WAL
    index another process is still building ("database is locked"). Opening is tried again
    until `timeout`.

    Raises sqlite3.Error (or OSError) if it cannot be opened.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _connect(path, schema, timeout)
        except sqlite3.OperationalError as exc:
            if not _contended(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _connect(path: Path, schema: str, timeout: float) -> sqlite3.Connection:
    connection = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=timeout
    )
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")  # on disk before anything is signed
        if schema:
            connection.executescript(schema)
    except BaseException:
        connection.close()
        raise
    return connection


def _contended(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message
