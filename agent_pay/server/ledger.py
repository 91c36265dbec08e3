"""The payment ledger: every payment the server handles, written ahead of every chain submission.

One SQLite table, `payments`, keyed by (scheme, payer, payment id) — for "exact" the payment
id is the EIP-3009 nonce; a channel scheme uses its voucher's id — with the resource it buys,
the accepted requirements and the full payment payload (so a settlement cut short by a crash
can be finished from the ledger alone), its state, the settling transaction and the receipt.

    verified ──► settling ──► settled ──► delivered
        │            │
        └────────────┴──► failed ──► (a retry reopens it: verified)

- verified: the facilitator accepted the payment; nothing was submitted.
- settling: about to be submitted, or submitted with the outcome unknown. Written *before*
  the facilitator is asked to settle, so a crash can never leave a submission unrecorded.
- settled: the money moved (the transaction is recorded); the payer is entitled to the
  resource from here on.
- delivered: the paid response was handed to the HTTP server.
- failed: nothing moved for this payment (refused, reverted, render failed, abandoned).

Every transition is a compare-and-set UPDATE (`... WHERE state = ?`), so of two requests
racing with the same payment exactly one wins each step. The `entitlements` view lists, per
(payer, resource), the payments that grant a re-read.

The database runs in WAL mode with `synchronous=FULL` by default: a committed transition
survives a killed process and a power cut. A ledger file belongs to one server process at a
time; `Ledger.open` takes an exclusive lock beside it and refuses a second opener.
"""

# Every query below is assembled from this module's constants and "?" placeholders only; all
# values are bound parameters, never formatted into the SQL.
# ruff: noqa: S608

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, Final, Literal

from agent_pay.errors import ConfigurationError
from agent_pay.protocol import PaymentPayload, PaymentRequirements
from agent_pay.protocol.extensions import SignedReceipt
from agent_pay.server.ledger_entry import (
    IN_FLIGHT,
    PAID,
    Entry,
    PaymentKey,
    PaymentState,
    fingerprint,
)
from agent_pay.server.ledger_sql import (
    COLUMNS,
    KEY,
    PAYMENT_IDS_SCHEMA,
    SCHEMA,
    connect,
    entry_from_row,
    key_params,
    transaction,
)

__all__ = [
    "IN_FLIGHT",
    "LEDGER_FILENAME",
    "PAID",
    "Entry",
    "Ledger",
    "PaymentKey",
    "PaymentState",
    "fingerprint",
]

LEDGER_FILENAME: Final = "ledger.sqlite"


class Ledger:
    """The payment ledger on SQLite. Thread-safe; every method is short and synchronous.

    Use `Ledger.open(path)` for a file (the default for a server) or `Ledger.in_memory()`
    (tests, benchmarks, the demo: nothing survives the process).
    """

    shared = False  # one process per file: every entry in flight is this process's

    def __init__(
        self,
        writer: sqlite3.Connection,
        reader: sqlite3.Connection | None = None,
        *,
        path: Path | None = None,
        lock_file: IO[bytes] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader or writer
        self._write_lock = threading.Lock()
        self._read_lock = self._write_lock if reader is None else threading.Lock()
        self._lock_file = lock_file
        self._clock = clock
        with self._write_lock:
            self._writer.executescript(SCHEMA + PAYMENT_IDS_SCHEMA)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["full", "normal"] = "full",
        clock: Callable[[], float] = time.time,
    ) -> Ledger:
        """Open (creating if needed) the ledger in the data directory `path`
        (`path/ledger.sqlite`), or the file `path` itself if it exists or ends in `.sqlite`.

        Raises:
            ConfigurationError: the file cannot be opened, or another process holds it.
        """
        target = Path(path)
        if not (target.is_file() or target.suffix in (".sqlite", ".sqlite3", ".db")):
            target = target / LEDGER_FILENAME
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            lock_file = open(f"{target}.lock", "ab")  # noqa: SIM115 - held for the ledger's life
        except OSError as exc:
            raise ConfigurationError(f"cannot open ledger {target}: {exc}") from None
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.close()
            raise ConfigurationError(
                f"ledger {target} is in use by another process (one server per data directory)"
            ) from None
        try:
            writer = connect(str(target), synchronous)
            reader = connect(str(target), synchronous)
        except sqlite3.Error as exc:
            lock_file.close()
            raise ConfigurationError(f"cannot open ledger {target}: {exc}") from None
        return cls(writer, reader, path=target, lock_file=lock_file, clock=clock)

    @classmethod
    def in_memory(cls, *, clock: Callable[[], float] = time.time) -> Ledger:
        """A ledger that lives and dies with this object."""
        return cls(connect(":memory:", "normal"), clock=clock)

    def close(self) -> None:
        """Close the database and release the file lock."""
        with self._write_lock:
            self._writer.close()
            if self._reader is not self._writer:
                self._reader.close()
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger({str(self.path) if self.path else ':memory:'})"

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: PaymentKey) -> Entry | None:
        rows = self._read(f"SELECT {COLUMNS} FROM payments WHERE {KEY}", key_params(key))
        return entry_from_row(rows[0]) if rows else None

    def in_flight(self) -> list[Entry]:
        """Entries a crash or a node outage may have left unresolved (verified, settling)."""
        rows = self._read(
            f"SELECT {COLUMNS} FROM payments WHERE state IN ('verified', 'settling') "
            "ORDER BY created_at"
        )
        return [entry_from_row(row) for row in rows]

    def entitlement(self, payer: str, resource: str) -> Entry | None:
        """The earliest paid entry of `payer` for `resource` (a URL path), if any."""
        rows = self._read(
            f"SELECT {COLUMNS} FROM payments WHERE payer = ? AND resource = ? "
            "AND state IN ('settled', 'delivered') ORDER BY settled_at LIMIT 1",
            (payer, resource),
        )
        return entry_from_row(rows[0]) if rows else None

    def entries(
        self, *, payer: str | None = None, states: Iterable[PaymentState] | None = None
    ) -> list[Entry]:
        """Entries, oldest first, optionally only `payer`'s and only in `states`."""
        clauses, params = [], []
        if payer is not None:
            clauses.append("payer = ?")
            params.append(payer)
        if states is not None:
            wanted = [str(s) for s in states]
            clauses.append(f"state IN ({', '.join('?' for _ in wanted)})")
            params.extend(wanted)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read(f"SELECT {COLUMNS} FROM payments{where} ORDER BY created_at", params)
        return [entry_from_row(row) for row in rows]

    def counts(self) -> dict[PaymentState, int]:
        """How many entries are in each state."""
        rows = self._read("SELECT state, COUNT(*) FROM payments GROUP BY state")
        counts = dict.fromkeys(PaymentState, 0)
        counts.update({PaymentState(state): n for state, n in rows})
        return counts

    # -- writes: each one transition, compare-and-set ------------------------------------------

    def begin(
        self,
        key: PaymentKey,
        *,
        resource: str,
        resource_url: str,
        requirements: PaymentRequirements,
        payment: PaymentPayload,
        state: PaymentState = PaymentState.VERIFIED,
    ) -> bool:
        """Record a verified payment (or reopen a failed one for the same resource). False if
        the key is already in the ledger in any other state: someone else owns it."""
        now = self._clock()
        payload, print_ = payment.to_json(), fingerprint(payment)
        inserted = self._write(
            f"INSERT INTO payments ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "NULL, NULL, NULL, NULL, 1, ?, ?, NULL, NULL) ON CONFLICT DO NOTHING",
            (
                *key_params(key),
                resource,
                resource_url,
                requirements.network,
                requirements.asset,
                requirements.pay_to,
                str(requirements.amount),
                requirements.to_json(),
                payload,
                print_,
                str(state),
                now,
                now,
            ),
        )
        if inserted:
            return True
        return self._write(
            "UPDATE payments SET state = ?, attempts = attempts + 1, error_reason = NULL, "
            "error_message = NULL, requirements = ?, payload = ?, fingerprint = ?, "
            f"resource_url = ?, updated_at = ? WHERE {KEY} AND state = 'failed' "
            "AND resource = ?",
            (
                str(state),
                requirements.to_json(),
                payload,
                print_,
                resource_url,
                now,
                *key_params(key),
                resource,
            ),
        )

    def take_over(self, key: PaymentKey) -> bool:
        """Whether `key` is in flight: this process owns every entry of its file."""
        entry = self.get(key)
        return entry is not None and entry.state in IN_FLIGHT

    def settling(self, key: PaymentKey) -> bool:
        """verified → settling: the write-ahead record before anything is submitted."""
        return self._move(key, (PaymentState.VERIFIED,), PaymentState.SETTLING)

    def record_submission(self, key: PaymentKey, tx_hash: str) -> bool:
        """Remember a settlement transaction as soon as it is sent (state stays settling)."""
        return self._write(
            f"UPDATE payments SET tx_hash = ?, updated_at = ? WHERE {KEY} AND state = 'settling'",
            (tx_hash, self._clock(), *key_params(key)),
        )

    def settled(
        self,
        key: PaymentKey,
        tx_hash: str,
        receipt: SignedReceipt | None,
        *,
        from_states: tuple[PaymentState, ...] = IN_FLIGHT,
    ) -> bool:
        """→ settled: the money moved in `tx_hash`."""
        now = self._clock()
        return self._move(
            key,
            from_states,
            PaymentState.SETTLED,
            tx_hash=tx_hash,
            receipt=receipt.to_json() if receipt is not None else None,
            settled_at=now,
            error_reason=None,
            error_message=None,
        )

    def delivered(self, key: PaymentKey) -> bool:
        """settled → delivered: the paid response left for the client."""
        return self._move(
            key, (PaymentState.SETTLED,), PaymentState.DELIVERED, delivered_at=self._clock()
        )

    def failed(
        self,
        key: PaymentKey,
        reason: str,
        message: str,
        *,
        from_states: tuple[PaymentState, ...] = IN_FLIGHT,
    ) -> bool:
        """→ failed: nothing moved for this payment (so far)."""
        return self._move(
            key, from_states, PaymentState.FAILED, error_reason=reason, error_message=message[:500]
        )

    # -- internals -----------------------------------------------------------------------------

    def _move(
        self,
        key: PaymentKey,
        from_states: tuple[PaymentState, ...],
        to_state: PaymentState,
        **fields: Any,
    ) -> bool:
        sets = ", ".join(f"{name} = ?" for name in fields)
        sets = f"state = ?, updated_at = ?{', ' if sets else ''}{sets}"
        marks = ", ".join("?" for _ in from_states)
        return self._write(
            f"UPDATE payments SET {sets} WHERE {KEY} AND state IN ({marks})",
            (
                str(to_state),
                self._clock(),
                *fields.values(),
                *key_params(key),
                *(str(s) for s in from_states),
            ),
        )

    # -- x402 payment identifiers (their own table: `payment_ids`) -----------------------------

    def bind_payment_id(
        self, payment_id: str, fingerprint: str, resource: str, *, key: PaymentKey | None = None
    ) -> tuple[str, str, bool]:
        """Let `payment_id` (a client's x402 payment-identifier) name the payment with
        `fingerprint`, bought for `resource`, unless it already names one: the (fingerprint,
        resource) the id names from now on, these or those of the payment it named first, and
        whether it named one already.

        With `key` (the payment's ledger key), an id not bound yet is left unbound if the
        ledger already holds that payment: the payer names its id on its first request, so an
        id first seen after the payment was recorded was added by someone else (a header rebuilt
        from the chain), and must never come to mark the payer's retry."""
        with self._write_lock, transaction(self._writer) as cursor:
            row = cursor.execute(
                "SELECT fingerprint, resource FROM payment_ids WHERE id = ?", (payment_id,)
            ).fetchone()
            if row is not None:
                return str(row[0]), str(row[1]), True
            if (
                key is not None
                and cursor.execute(
                    f"SELECT 1 FROM payments WHERE {KEY}", key_params(key)
                ).fetchone()
            ):
                return fingerprint, resource, False
            cursor.execute(
                "INSERT INTO payment_ids (id, fingerprint, resource, created_at) "
                "VALUES (?, ?, ?, ?)",
                (payment_id, fingerprint, resource, self._clock()),
            )
        return fingerprint, resource, False

    def _write(self, sql: str, params: Iterable[Any]) -> bool:
        with self._write_lock, transaction(self._writer) as cursor:
            cursor.execute(sql, tuple(params))
            return cursor.rowcount > 0

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._read_lock:
            return self._reader.execute(sql, tuple(params)).fetchall()
