"""Progress lines on stderr: live on a terminal, one line per step otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Reports what a long run is doing, with the time since it started."""

    def __init__(self, out: TextIO | None = None, *, enabled: bool = True, label: str = "") -> None:
        self.out = out if out is not None else sys.stderr
        self.enabled = enabled
        self.label = label
        self.started = time.perf_counter()
        self._live = enabled and hasattr(self.out, "isatty") and self.out.isatty()
        self._pending_live = False

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _prefix(self) -> str:
        return (
            f"[{self.label} {self.elapsed():6.1f}s]" if self.label else f"[{self.elapsed():6.1f}s]"
        )

    def step(self, text: str) -> None:
        """A line that stays."""
        if not self.enabled:
            return
        if self._pending_live:
            self.out.write("\n")
            self._pending_live = False
        self.out.write(f"{self._prefix()} {text}\n")
        self.out.flush()

    def update(self, text: str) -> None:
        """A line that the next one overwrites (on a terminal; elsewhere it is dropped)."""
        if not self._live:
            return
        self.out.write(f"\r{self._prefix()} {text}\x1b[K")
        self.out.flush()
        self._pending_live = True

    def counter(self, what: str, total: int) -> _Counter:
        """A callback for `on_progress(done)` that shows `what: done/total`."""
        return _Counter(self, what, total)


class _Counter:
    def __init__(self, progress: Progress, what: str, total: int) -> None:
        self.progress = progress
        self.what = what
        self.total = total

    def __call__(self, done: int) -> None:
        self.progress.update(f"{self.what}: {done:,}/{self.total:,}")
