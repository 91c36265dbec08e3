"""This process as one instance of a server on the shared store: its id and its heartbeat.

Each server process registers a row in `instances` and refreshes its `heartbeat_at` every
`lease / 4` seconds from a daemon thread (so a busy event loop does not stop it; a killed or
frozen process does). An instance whose heartbeat is older than the lease has stopped: the
payments it left in flight may be taken over by another (`PostgresLedger.take_over`). Times are
the database's own (`now()`), so hosts with skewed clocks agree.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from typing import Final

from agent_pay.store.errors import StoreUnavailableError
from agent_pay.store.postgres.connection import Pool
from agent_pay.store.postgres.lease import DEFAULT_LEASE_SECONDS

__all__ = ["DEFAULT_LEASE_SECONDS", "Instance"]

log = logging.getLogger(__name__)


STALE_OWNER: Final = (
    "NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = payments.owner "
    "AND i.heartbeat_at > now() - make_interval(secs => %s))"
)
"""SQL: the owner of this `payments` row has stopped (bind: the lease in seconds)."""


class Instance:
    """Registers this process in `pool`'s `instances` and keeps its heartbeat until `stop`."""

    def __init__(self, pool: Pool, *, lease: float = DEFAULT_LEASE_SECONDS) -> None:
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.lease = lease
        self._pool = pool
        self._stopped = threading.Event()
        self._beat()
        self._thread = threading.Thread(target=self._run, name="agent-pay-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        self._pool.execute(
            "INSERT INTO instances (id) VALUES (%s) "
            "ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
            (self.id,),
        )

    def _run(self) -> None:
        while not self._stopped.wait(self.lease / 4):
            try:
                self._beat()
            except StoreUnavailableError as exc:  # the next beat may get through
                if self._pool.closed:  # closed under it: nothing more to beat for
                    return
                log.warning("heartbeat of %s: %s", self.id, exc)

    def stop(self) -> None:
        """Stop the heartbeat and unregister: what this process left in flight may be taken
        over at once."""
        self._stopped.set()
        self._thread.join(timeout=5)
        try:
            self._pool.execute("DELETE FROM instances WHERE id = %s", (self.id,))
        except StoreUnavailableError as exc:
            log.warning("could not unregister %s: %s", self.id, exc)
