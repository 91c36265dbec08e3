"""The payment ledger on PostgreSQL: the same table, states and compare-and-set transitions as
the SQLite `Ledger` (`agent_pay.server.ledger`), shared by any number of server processes.

Each transition is one `UPDATE ... WHERE state IN (...)` in its own autocommit transaction:
PostgreSQL's row locks give the loser of a race zero rows, whichever process or host it runs
on. An entry in flight (verified, settling) also names its `owner`, the instance that wrote it:
the others leave it alone while that instance's heartbeat is fresh, and take it over, one of
them, by compare-and-set on the owner once it stopped (`take_over`). Every transition of an
entry in flight is fenced by its owner: an instance that was only frozen, and whose entry was
taken over meanwhile, finds its next write refused and waits for the new owner's outcome.

A paid entry stays paid (settled, then delivered: never failed again), so the entitlements
this process found are kept in memory (`ENTITLEMENT_CACHE` of them, least recently used out):
a re-read of what it saw bought costs no round trip. What it found *not* bought is asked again
every time — another instance may have sold it a moment ago.
"""

# Every query below is assembled from this module's constants and "%s" placeholders only; all
# values are bound parameters, never formatted into the SQL.
# ruff: noqa: S608

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Final

from agent_pay.protocol import PaymentPayload, PaymentRequirements
from agent_pay.protocol.extensions import SignedReceipt
from agent_pay.server.ledger_entry import IN_FLIGHT, Entry, PaymentKey, PaymentState, fingerprint
from agent_pay.server.ledger_sql import COLUMNS, entry_from_row, key_params
from agent_pay.store.postgres.connection import Pool
from agent_pay.store.postgres.deadline import IDLE_LIMIT
from agent_pay.store.postgres.instance import STALE_OWNER, Instance

__all__ = ["ENTITLEMENT_CACHE", "PostgresLedger"]

ENTITLEMENT_CACHE: Final = 65_536
"""Paid (payer, resource) pairs each process remembers."""

KEY: Final = "scheme = %s AND payer = %s AND payment_id = %s"
_IN_FLIGHT_SQL: Final = "state IN ('verified', 'settling')"
_FENCE: Final = f"(NOT {_IN_FLIGHT_SQL} OR owner = %s)"
"""SQL: a row out of flight, or in flight and ours (bind: this instance's id)."""


class PostgresLedger:
    """The payment ledger of every server process on one PostgreSQL database.

    Args:
        pool: the store's connections (`Pool`).
        instance: this process's registration (its id owns what it puts in flight).
    """

    shared = True

    def __init__(
        self, pool: Pool, instance: Instance, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.pool = pool
        self.instance = instance
        self._clock = clock
        self._entitled: OrderedDict[tuple[str, str], Entry] = OrderedDict()
        self._entitled_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PostgresLedger({self.pool.url})"

    def close(self) -> None:
        """Nothing to release: the `Store` owns the pool and the instance."""

    # -- reads ---------------------------------------------------------------------------------

    def get(self, key: PaymentKey) -> Entry | None:
        rows = self.pool.fetch(f"SELECT {COLUMNS} FROM payments WHERE {KEY}", key_params(key))
        return entry_from_row(rows[0]) if rows else None

    def in_flight(self) -> list[Entry]:
        rows = self.pool.fetch(
            f"SELECT {COLUMNS} FROM payments WHERE {_IN_FLIGHT_SQL} "
            f"AND (owner = %s OR owner IS NULL OR {STALE_OWNER}) ORDER BY created_at",
            (self.instance.id, self.instance.lease),
        )
        return [entry_from_row(row) for row in rows]

    def entitlement(self, payer: str, resource: str) -> Entry | None:
        wanted = (payer, resource)
        with self._entitled_lock:
            entry = self._entitled.get(wanted)
            if entry is not None:
                self._entitled.move_to_end(wanted)
                return entry
        rows = self.pool.fetch(
            f"SELECT {COLUMNS} FROM payments WHERE payer = %s AND resource = %s "
            "AND state IN ('settled', 'delivered') ORDER BY settled_at LIMIT 1",
            (payer, resource),
        )
        if not rows:
            return None
        entry = entry_from_row(rows[0])
        with self._entitled_lock:
            self._entitled[wanted] = entry
            if len(self._entitled) > ENTITLEMENT_CACHE:
                self._entitled.popitem(last=False)
        return entry

    def entries(
        self, *, payer: str | None = None, states: Iterable[PaymentState] | None = None
    ) -> list[Entry]:
        clauses: list[str] = []
        params: list[Any] = []
        if payer is not None:
            clauses.append("payer = %s")
            params.append(payer)
        if states is not None:
            clauses.append("state = ANY(%s)")
            params.append([str(s) for s in states])
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.pool.fetch(
            f"SELECT {COLUMNS} FROM payments{where} ORDER BY created_at", tuple(params)
        )
        return [entry_from_row(row) for row in rows]

    def counts(self) -> dict[PaymentState, int]:
        rows = self.pool.fetch("SELECT state, COUNT(*) FROM payments GROUP BY state")
        counts = dict.fromkeys(PaymentState, 0)
        counts.update({PaymentState(state): int(n) for state, n in rows})
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
        now, me = self._clock(), self.instance.id
        payload, print_ = payment.to_json(), fingerprint(payment)
        inserted = self.pool.execute(
            f"INSERT INTO payments ({COLUMNS}, owner) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s, %s, %s, NULL, NULL, NULL, NULL, 1, %s, %s, NULL, NULL, %s) "
            "ON CONFLICT DO NOTHING",
            (
                *key_params(key),
                resource,
                resource_url,
                requirements.network,
                requirements.asset,
                requirements.pay_to,
                requirements.amount,
                requirements.to_json(),
                payload,
                print_,
                str(state),
                now,
                now,
                me,
            ),
        )
        if inserted:
            return True
        return self._write(
            "UPDATE payments SET state = %s, attempts = attempts + 1, error_reason = NULL, "
            "error_message = NULL, requirements = %s, payload = %s, fingerprint = %s, "
            f"resource_url = %s, updated_at = %s, owner = %s WHERE {KEY} AND state = 'failed' "
            "AND resource = %s",
            (
                str(state),
                requirements.to_json(),
                payload,
                print_,
                resource_url,
                now,
                me,
                *key_params(key),
                resource,
            ),
        )

    def take_over(self, key: PaymentKey) -> bool:
        me = self.instance.id
        return self._write(
            f"UPDATE payments SET owner = %s WHERE {KEY} AND {_IN_FLIGHT_SQL} "
            f"AND (owner = %s OR owner IS NULL OR {STALE_OWNER})",
            (me, *key_params(key), me, self.instance.lease),
        )

    def settling(self, key: PaymentKey) -> bool:
        return self._move(key, (PaymentState.VERIFIED,), PaymentState.SETTLING)

    def record_submission(self, key: PaymentKey, tx_hash: str) -> bool:
        return self._write(
            f"UPDATE payments SET tx_hash = %s, updated_at = %s WHERE {KEY} "
            f"AND state = 'settling' AND {_FENCE}",
            (tx_hash, self._clock(), *key_params(key), self.instance.id),
        )

    def settled(
        self,
        key: PaymentKey,
        tx_hash: str,
        receipt: SignedReceipt | None,
        *,
        from_states: tuple[PaymentState, ...] = IN_FLIGHT,
    ) -> bool:
        return self._move(
            key,
            from_states,
            PaymentState.SETTLED,
            tx_hash=tx_hash,
            receipt=receipt.to_json() if receipt is not None else None,
            settled_at=self._clock(),
            error_reason=None,
            error_message=None,
        )

    def delivered(self, key: PaymentKey) -> bool:
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
        return self._move(
            key, from_states, PaymentState.FAILED, error_reason=reason, error_message=message[:500]
        )

    def bind_payment_id(
        self, payment_id: str, fingerprint: str, resource: str, *, key: PaymentKey | None = None
    ) -> tuple[str, str, bool]:
        """See `Ledger.bind_payment_id`. Of two processes binding one id at once, the primary
        key lets one insert; the other reads what it bound."""
        select = "SELECT fingerprint, resource FROM payment_ids WHERE id = %s"
        with self.pool.connection() as connection, connection.transaction():
            connection.execute(IDLE_LIMIT)  # a frozen instance must not hold the id's row
            row = connection.execute(select.encode(), (payment_id,)).fetchone()
            if row is not None:
                return str(row[0]), str(row[1]), True
            if key is not None:
                held = connection.execute(
                    f"SELECT 1 FROM payments WHERE {KEY}".encode(), key_params(key)
                ).fetchone()
                if held:
                    return fingerprint, resource, False
            inserted = connection.execute(
                b"INSERT INTO payment_ids (id, fingerprint, resource, created_at) "
                b"VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (payment_id, fingerprint, resource, self._clock()),
            ).rowcount
            if not inserted:
                row = connection.execute(select.encode(), (payment_id,)).fetchone()
                if row is not None:
                    return str(row[0]), str(row[1]), True
        return fingerprint, resource, False

    # -- internals -----------------------------------------------------------------------------

    def _move(
        self,
        key: PaymentKey,
        from_states: tuple[PaymentState, ...],
        to_state: PaymentState,
        **fields: Any,
    ) -> bool:
        sets = "".join(f", {name} = %s" for name in fields)
        return self._write(
            f"UPDATE payments SET state = %s, updated_at = %s{sets} WHERE {KEY} "
            f"AND state = ANY(%s) AND {_FENCE}",
            (
                str(to_state),
                self._clock(),
                *fields.values(),
                *key_params(key),
                [str(s) for s in from_states],
                self.instance.id,
            ),
        )

    def _write(self, sql: str, params: tuple[Any, ...]) -> bool:
        return self.pool.execute(sql, params) > 0
