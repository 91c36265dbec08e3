"""A clock for tests."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that moves only when a test moves it: pass it as `clock=` (to `EmbeddedChain`,
    `ReceiptStore.open`, ...) and set or advance `now` (seconds since the epoch)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
