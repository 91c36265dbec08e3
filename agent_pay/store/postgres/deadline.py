"""A client-side deadline on the store's statements: a database that hangs is a failure.

libpq has no deadline of its own on a statement, and TCP does not help: a PostgreSQL that is
stopped dead (its process frozen, its host paging, a network that drops nothing but answers
nothing) keeps its sockets open and its kernel acknowledging, so a query waits forever, and the
paid read waiting on it with it. `server-side statement_timeout` is no help either: the server is
what hangs.

So every connection lent out by the pool is watched: one thread checks, a few times a
deadline, which of them has been out for longer than the deadline, and shuts its socket down.
The statement then fails in its own thread as a lost connection does (`psycopg.OperationalError`,
a 503 to the client), the pool discards the connection, and what the statement did or did not
commit is the same question as after a connection lost mid-statement, which every caller
already answers (a write that raised is treated as not known to have happened: a settlement
whose hash was not recorded is not broadcast, and reconciliation reads the row back later).
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Final

__all__ = ["DEFAULT_DEADLINE", "IDLE_LIMIT", "Deadlines"]

DEFAULT_DEADLINE: Final = 5.0
"""Seconds a statement (or transaction) may keep its connection before it is cut."""

IDLE_LIMIT: Final = b"SET LOCAL idle_in_transaction_session_timeout = '1s'"
"""The first statement of a transaction that takes row locks other instances wait on (a
channel store's checkpoint, a payment identifier's binding). The deadline above is the
client's own: a process frozen mid-transaction (SIGSTOP, a long pause) has its deadline thread
frozen with it, and holds its locks for as long as it is frozen, every other instance's
statement on those rows waiting behind them. The database ends such a transaction after 1 s
idle instead (its statements follow one another within milliseconds); the thawed process's
next statement or commit fails, as after a connection lost."""


class Deadlines:
    """Cuts the socket of any connection held past `seconds`; `watch` is cheap (a dict insert
    under a lock), the thread starts on the first watch and stops on `close`."""

    def __init__(self, seconds: float = DEFAULT_DEADLINE) -> None:
        if seconds <= 0:
            raise ValueError(f"a deadline must be positive, not {seconds}")
        self.seconds = seconds
        self._lock = threading.Lock()
        self._out: dict[int, tuple[float, int]] = {}  # token -> (deadline, socket fd)
        self._cut: set[int] = set()
        self._tokens = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, fd: int) -> Iterator[Cut]:
        """Watch the socket `fd` while the block runs; `Cut.happened` says if it was cut."""
        token = next(self._tokens)
        cut = Cut()
        with self._lock:
            self._out[token] = (time.monotonic() + self.seconds, fd)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="agent-pay-store-deadlines", daemon=True
                )
                self._thread.start()
        try:
            yield cut
        finally:
            with self._lock:
                del self._out[token]
                cut.happened = token in self._cut
                self._cut.discard(token)

    def _run(self) -> None:
        tick = min(0.25, self.seconds / 4)
        while not self._stop.wait(tick):
            now = time.monotonic()
            with self._lock:  # under the lock: a watched fd is open until `watch` returns
                for token, (deadline, fd) in self._out.items():
                    if deadline <= now and token not in self._cut:
                        self._cut.add(token)
                        _shut_down(fd)

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1)


class Cut:
    """Whether a watched connection was cut for outliving its deadline."""

    __slots__ = ("happened",)

    def __init__(self) -> None:
        self.happened = False


def _shut_down(fd: int) -> None:
    """Shut the socket `fd` down (both ways) without closing it: the thread blocked on it wakes
    to an end of stream, and the descriptor stays its owner's to close."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.detach()  # the descriptor is libpq's
