"""The connection pool of the PostgreSQL store, and its errors as `StoreUnavailableError`."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from agent_pay.store.errors import StoreUnavailableError
from agent_pay.store.postgres.deadline import DEFAULT_DEADLINE, Deadlines
from agent_pay.store.postgres.migrations import migrate

__all__ = ["Pool", "redact"]

Connection = psycopg.Connection[tuple[Any, ...]]


_USER_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^:/?#@\s\"']*):[^/?#@\s\"']*@", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def redact(url: str) -> str:
    """`url` without its password (in the user part or a `password=` parameter), fit for a
    log line. Any text: a URL that does not parse, or a message quoting one, is redacted."""
    return _QUERY_PASSWORD.sub(r"\1***", _USER_PASSWORD.sub(r"\1:***@", url))


class Pool:
    """A pool of autocommit connections to one database, migrated on opening.

    Args:
        url: a libpq connection string (`postgresql://user@host:port/db`; the password from
            the URL, `PGPASSWORD` or `~/.pgpass`).
        max_size: connections this process may hold at once (a server's worker threads).
        timeout: seconds to wait for one before the call fails (503 to the client).
        deadline: seconds a statement or transaction may take before its connection is cut
            and the call fails (`agent_pay.store.postgres.deadline`): a database that hangs
            is a 503, not a request that never ends.
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        timeout: float = 5.0,
        deadline: float = DEFAULT_DEADLINE,
    ):
        self.url = redact(url)
        self._deadlines = Deadlines(deadline)
        try:
            # One connection first: it migrates, and a database that cannot be reached fails
            # here at once rather than after the pool's retries.
            with psycopg.connect(url, autocommit=True, connect_timeout=max(2, int(timeout))) as c:
                self.schema_version = migrate(c)
            self._pool: ConnectionPool[Connection] = ConnectionPool(
                url,
                min_size=min_size,
                max_size=max_size,
                timeout=timeout,
                kwargs={"autocommit": True, "connect_timeout": max(2, int(timeout))},
                open=True,
                name="agent-pay",
            )
            self._pool.wait(timeout)
        except (psycopg.Error, TimeoutError) as exc:
            self.close()
            raise StoreUnavailableError(
                f"cannot open the store {self.url}: {redact(str(exc))}"
            ) from None

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection for one statement or transaction; psycopg's errors become
        `StoreUnavailableError`."""
        cut = None
        try:
            with (
                self._pool.connection() as connection,
                self._deadlines.watch(connection.pgconn.socket) as cut,
            ):
                yield connection
        except psycopg.Error as exc:
            if cut is not None and cut.happened:
                raise StoreUnavailableError(
                    f"the store {self.url} did not answer within {self._deadlines.seconds:g} s"
                ) from exc
            raise StoreUnavailableError(f"{type(exc).__name__}: {redact(str(exc))}") from exc

    def execute(self, sql: str, params: tuple[Any, ...] | Mapping[str, Any] = ()) -> int:
        """Run one statement; how many rows it changed."""
        with self.connection() as connection:
            return connection.execute(sql.encode(), params).rowcount

    def fetch(
        self, sql: str, params: tuple[Any, ...] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        with self.connection() as connection:
            return connection.execute(sql.encode(), params).fetchall()

    @property
    def closed(self) -> bool:
        pool = getattr(self, "_pool", None)
        return pool is None or pool.closed

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()
        self._deadlines.close()
