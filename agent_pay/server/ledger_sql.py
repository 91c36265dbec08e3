"""The ledger's SQLite layer: the schema, the row layout, connections and transactions."""

# The ledger's queries are assembled from these constants and "?" placeholders only; all
# values are bound parameters, never formatted into the SQL.

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from agent_pay.server.ledger_entry import Entry, PaymentKey, PaymentState

__all__ = [
    "COLUMNS",
    "KEY",
    "PAYMENT_IDS_SCHEMA",
    "SCHEMA",
    "connect",
    "entry_from_row",
    "key_params",
    "transaction",
]


SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS payments (
    scheme        TEXT NOT NULL,
    payer         TEXT NOT NULL,
    payment_id    TEXT NOT NULL,
    resource      TEXT NOT NULL,               -- the URL path: what entitlements are keyed by
    resource_url  TEXT NOT NULL,               -- the URL as sold (what receipts name)
    network       TEXT NOT NULL,
    asset         TEXT NOT NULL,
    pay_to        TEXT NOT NULL,
    amount        TEXT NOT NULL,               -- decimal: a uint256 does not fit an INTEGER
    requirements  TEXT NOT NULL,               -- JSON: the offer the payment matched
    payload       TEXT NOT NULL,               -- JSON: the whole PaymentPayload
    fingerprint   TEXT NOT NULL,               -- sha256 of the accepted offer + signed payload
    state         TEXT NOT NULL CHECK (state IN
                      ('verified', 'settling', 'settled', 'delivered', 'failed')),
    tx_hash       TEXT,
    receipt       TEXT,                        -- JSON: the SignedReceipt, once settled
    error_reason  TEXT,
    error_message TEXT,
    attempts      INTEGER NOT NULL DEFAULT 1,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    settled_at    REAL,
    delivered_at  REAL,
    PRIMARY KEY (scheme, payer, payment_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS payments_by_reader ON payments (payer, resource, state);
CREATE INDEX IF NOT EXISTS payments_in_flight ON payments (state)
    WHERE state IN ('verified', 'settling');
CREATE VIEW IF NOT EXISTS entitlements AS
    SELECT payer, resource, MIN(settled_at) AS since, COUNT(*) AS purchases
    FROM payments WHERE state IN ('settled', 'delivered') GROUP BY payer, resource;
"""
PAYMENT_IDS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS payment_ids (
    id            TEXT PRIMARY KEY,            -- x402 payment-identifier, chosen by the client
    fingerprint   TEXT NOT NULL,               -- the payment it names (see fingerprint())
    resource      TEXT NOT NULL,               -- the URL path it paid for
    created_at    REAL NOT NULL
) WITHOUT ROWID;
"""
COLUMNS: Final = (
    "scheme, payer, payment_id, resource, resource_url, network, asset, pay_to, amount, "
    "requirements, payload, fingerprint, state, tx_hash, receipt, error_reason, error_message, "
    "attempts, created_at, updated_at, settled_at, delivered_at"
)
KEY: Final = "scheme = ? AND payer = ? AND payment_id = ?"


def entry_from_row(row: tuple[Any, ...]) -> Entry:
    return Entry(
        PaymentKey(row[0], row[1], row[2]),
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        int(row[8]),
        row[9],
        row[10],
        row[11],
        PaymentState(row[12]),
        *row[13:],
    )


def key_params(key: PaymentKey) -> tuple[str, str, str]:
    return (key.scheme, key.payer, key.payment_id)


def connect(target: str, synchronous: str) -> sqlite3.Connection:
    connection = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 5000")
    if target != ":memory:":
        connection.execute("PRAGMA journal_mode = WAL")
    connection.execute(f"PRAGMA synchronous = {'FULL' if synchronous == 'full' else 'NORMAL'}")
    return connection


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Cursor]:
    cursor = connection.cursor()
    cursor.execute("BEGIN IMMEDIATE")
    try:
        yield cursor
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    cursor.execute("COMMIT")
