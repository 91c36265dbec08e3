"""The background writer both channel stores run: a thread that calls `flush` every interval,
or at once when woken, until it is stopped."""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["BackgroundWriter"]


class BackgroundWriter:
    """Calls `flush()` every `interval` seconds in a daemon thread named `name`; an error of
    the kinds in `retried` goes to `on_error` (called inside the handler, so `log.exception`
    works) and the next round tries again."""

    def __init__(
        self,
        flush: Callable[[], object],
        interval: float,
        name: str,
        *,
        retried: tuple[type[Exception], ...],
        on_error: Callable[[Exception], None],
    ) -> None:
        self._flush = flush
        self.interval = interval
        self._name = name
        self._retried = retried
        self._on_error = on_error
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self._flush()
            except self._retried as exc:
                self._on_error(exc)

    def stop(self) -> None:
        """Stop the thread, after the round under way (waits up to 10 s for it)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
