"""The one error a store backend raises when it cannot be read or written."""

from __future__ import annotations

import sqlite3
from typing import Final

__all__ = ["STORE_ERRORS", "StoreUnavailableError"]


class StoreUnavailableError(Exception):
    """The shared store cannot be reached, or refused a statement (a 503 to the client:
    retry). Raised by the PostgreSQL backend in place of psycopg's errors."""


STORE_ERRORS: Final = (sqlite3.Error, StoreUnavailableError)
"""What a store call may raise when the store, not the request, is at fault."""
