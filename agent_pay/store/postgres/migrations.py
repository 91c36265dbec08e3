"""The PostgreSQL schema, as numbered migrations applied once, in order, under a lock.

`migrate(connection)` takes a transaction-scoped advisory lock, reads the highest version in
`schema_version`, applies every later migration and records it, all in one transaction: of
several instances starting together, one migrates and the others find it done. A migration is
never edited once released; a change is a new one at the end.
"""

from __future__ import annotations

from typing import Final

import psycopg

from agent_pay.store.errors import StoreUnavailableError

__all__ = ["MIGRATIONS", "migrate"]

_LOCK: Final = 0x61676E74_70617931  # "agntpay1": the advisory lock of migrations

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: the payment ledger, payment-identifier bindings, sign-in nonces, live instances.
    """
    CREATE TABLE payments (
        scheme        TEXT NOT NULL,
        payer         TEXT NOT NULL,
        payment_id    TEXT NOT NULL,
        resource      TEXT NOT NULL,
        resource_url  TEXT NOT NULL,
        network       TEXT NOT NULL,
        asset         TEXT NOT NULL,
        pay_to        TEXT NOT NULL,
        amount        NUMERIC(78, 0) NOT NULL,
        requirements  TEXT NOT NULL,
        payload       TEXT NOT NULL,
        fingerprint   TEXT NOT NULL,
        state         TEXT NOT NULL CHECK (state IN
                          ('verified', 'settling', 'settled', 'delivered', 'failed')),
        tx_hash       TEXT,
        receipt       TEXT,
        error_reason  TEXT,
        error_message TEXT,
        attempts      INTEGER NOT NULL DEFAULT 1,
        created_at    DOUBLE PRECISION NOT NULL,
        updated_at    DOUBLE PRECISION NOT NULL,
        settled_at    DOUBLE PRECISION,
        delivered_at  DOUBLE PRECISION,
        owner         TEXT,               -- the instance that wrote the in-flight state
        PRIMARY KEY (scheme, payer, payment_id)
    );
    CREATE INDEX payments_by_reader ON payments (payer, resource, state);
    CREATE INDEX payments_in_flight ON payments (created_at)
        WHERE state IN ('verified', 'settling');
    CREATE TABLE payment_ids (
        id            TEXT PRIMARY KEY,
        fingerprint   TEXT NOT NULL,
        resource      TEXT NOT NULL,
        created_at    DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE siwx_nonces (
        nonce         TEXT PRIMARY KEY,
        expires_at    DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX siwx_nonces_by_expiry ON siwx_nonces (expires_at);
    CREATE TABLE instances (
        id            TEXT PRIMARY KEY,   -- host:pid:random, one per server process
        started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
        heartbeat_at  TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE TABLE settings (
        name          TEXT PRIMARY KEY,   -- e.g. receipt_signer: what every instance must share
        value         TEXT NOT NULL
    );
    """,
    # 2: the channel scheme's state, shared by the instances: each channel's snapshot, the
    # reads its vouchers paid for (entitlements), and which instance accepts its vouchers now.
    """
    CREATE TABLE channel_states (
        contract      TEXT NOT NULL,      -- the channel contract's address
        channel_id    TEXT NOT NULL,      -- 0x-hex, 32 bytes
        payee         TEXT NOT NULL,
        status        INTEGER NOT NULL,
        version       BIGINT NOT NULL,
        state         TEXT NOT NULL,      -- the account's snapshot, JSON
        updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (contract, channel_id)
    );
    CREATE TABLE channel_paid_reads (
        payer         TEXT NOT NULL,
        resource      TEXT NOT NULL,      -- the URL path: what entitlements are looked up by
        contract      TEXT NOT NULL,
        channel_id    TEXT NOT NULL,
        cumulative    NUMERIC(78, 0) NOT NULL,  -- the voucher that paid
        url           TEXT NOT NULL,      -- the URL as sold: what the receipt names
        price         NUMERIC(78, 0) NOT NULL,
        payee         TEXT NOT NULL,
        token         TEXT NOT NULL,
        at            DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (payer, resource, contract, channel_id, cumulative)
    );
    CREATE TABLE channel_leases (
        contract      TEXT NOT NULL,
        channel_id    TEXT NOT NULL,
        holder        TEXT,               -- the instance accepting its vouchers; NULL: free
        epoch         BIGINT NOT NULL,    -- bumped on every take: fences the older holder
        expires_at    TIMESTAMPTZ NOT NULL,
        wanted_by     TEXT,               -- another instance asked for it: hand it over
        wanted_at     TIMESTAMPTZ,
        PRIMARY KEY (contract, channel_id)
    );
    CREATE INDEX channel_leases_by_holder ON channel_leases (holder) WHERE holder IS NOT NULL;
    """,
)


def migrate(connection: psycopg.Connection[tuple[object, ...]]) -> int:
    """Bring the schema up to date; the version it is at. StoreUnavailableError if a newer
    agent-pay wrote it (this one would misread it)."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = connection.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
        current = int(row[0]) if row else 0  # type: ignore[call-overload]
        if current > len(MIGRATIONS):
            raise StoreUnavailableError(
                f"the store is at schema version {current}, newer than this agent-pay knows "
                f"({len(MIGRATIONS)}): run the agent-pay that wrote it, or a newer one"
            )
        for version, sql in enumerate(MIGRATIONS[current:], start=current + 1):
            connection.execute(sql.encode())
            connection.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
    return len(MIGRATIONS)
