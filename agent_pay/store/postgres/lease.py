"""The default lease of an instance on the shared store (no psycopg needed to read it)."""

from typing import Final

__all__ = ["DEFAULT_LEASE_SECONDS"]

DEFAULT_LEASE_SECONDS: Final = 10.0
"""How long an instance's silence means it has stopped."""
