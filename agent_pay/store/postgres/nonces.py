"""Sign-in-with-x's replay guard on PostgreSQL: a nonce is accepted once across instances."""

from __future__ import annotations

from typing import Final

from agent_pay.store.postgres.connection import Pool

__all__ = ["PostgresNonces"]

_PRUNE_EVERY: Final = 1024  # spends between sweeps of expired nonces (by this process)


class PostgresNonces:
    """`SpentNonces` in the store's `siwx_nonces` table."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._spends = 0

    def spend(self, nonce: str, expires: float, now: float) -> bool:
        self._spends += 1
        if self._spends % _PRUNE_EVERY == 0:
            self.pool.execute("DELETE FROM siwx_nonces WHERE expires_at <= %s", (now,))
        # A nonce kept past its expiry (not swept yet) is still refused: harmless, it expired.
        inserted = self.pool.execute(
            "INSERT INTO siwx_nonces (nonce, expires_at) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (nonce, expires),
        )
        return inserted > 0
