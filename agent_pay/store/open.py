"""Opening the server's store from its setting: a data directory (SQLite) or a PostgreSQL URL."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent_pay.errors import ConfigurationError
from agent_pay.server.ledger import Ledger
from agent_pay.server.siwx import MemoryNonces
from agent_pay.store.errors import StoreUnavailableError
from agent_pay.store.postgres.lease import DEFAULT_LEASE_SECONDS
from agent_pay.store.protocols import PaymentLedger, SpentNonces

if TYPE_CHECKING:
    from agent_pay.facilitator.channel.persistence import ChannelPersistence

__all__ = ["POSTGRES_SCHEMES", "Store", "is_postgres", "open_store"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(target: str | None) -> bool:
    return target is not None and target.startswith(POSTGRES_SCHEMES)


@dataclass
class Store:
    """The server's store, opened: its ledger, its sign-in replay guard, and what to close."""

    ledger: PaymentLedger
    nonces: SpentNonces
    where: str
    """For messages: the ledger file, or the database URL without its password."""
    _closers: list[Callable[[], None]] = field(default_factory=list)
    _claim: Callable[[str, str], str] | None = None
    channels: Callable[[str], ChannelPersistence] | None = None
    """On a shared store: the channel state of a channel contract (its address), with leases
    (`agent_pay.store.postgres.channels`); None: channels keep a store of their own."""

    @property
    def shared(self) -> bool:
        return self.ledger.shared

    def claim(self, name: str, value: str) -> str:
        """Record `value` as the store's `name` unless it has one: the value it has now.
        (Every instance on a shared store must sign receipts with one key: each claims its
        address, and the first one wins.) A store of one process keeps nothing: `value`."""
        return value if self._claim is None else self._claim(name, value)

    def close(self) -> None:
        for close in reversed(self._closers):
            close()
        self._closers.clear()


def open_store(
    target: str | None,
    server_dir: Path,
    *,
    pool_size: int = 8,
    lease: float = DEFAULT_LEASE_SECONDS,
    clock: Callable[[], float] = time.time,
) -> Store:
    """The store `target` names: a `postgresql://` URL, else SQLite in `target` (a directory
    or file) or, when None, in `server_dir`.

    Raises:
        ConfigurationError: the store cannot be opened (a SQLite file in use by another
            process, a database that cannot be reached).
    """
    if not is_postgres(target):
        ledger = Ledger.open(Path(target) if target else server_dir, clock=clock)
        return Store(ledger, MemoryNonces(), str(ledger.path), [ledger.close])
    assert target is not None
    try:
        from agent_pay.store.postgres.connection import Pool
    except ImportError:  # pragma: no cover - the extra is part of the test install
        raise ConfigurationError(
            "a PostgreSQL store needs psycopg: pip install 'agent-pay[postgres]'"
        ) from None
    from agent_pay.store.postgres.channels import PostgresChannelStore
    from agent_pay.store.postgres.instance import Instance
    from agent_pay.store.postgres.ledger import PostgresLedger
    from agent_pay.store.postgres.nonces import PostgresNonces

    try:
        pool = Pool(target, max_size=pool_size)
    except StoreUnavailableError as exc:
        raise ConfigurationError(str(exc)) from None
    instance = Instance(pool, lease=lease)

    def claim(name: str, value: str) -> str:
        pool.execute(
            "INSERT INTO settings (name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (name, value),
        )
        rows = pool.fetch("SELECT value FROM settings WHERE name = %s", (name,))
        return str(rows[0][0])

    shared = PostgresLedger(pool, instance, clock=clock)

    def channels(contract: str) -> PostgresChannelStore:
        return PostgresChannelStore(pool, instance.id, contract)

    return Store(
        shared, PostgresNonces(pool), pool.url, [pool.close, instance.stop], claim, channels
    )
