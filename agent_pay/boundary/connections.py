"""A deadline and a size bound on every request head, which uvicorn lacks.

Measured on uvicorn 0.55 (httptools and h11 alike): a connection that opens and sends nothing is
held forever (the keep-alive timer is armed only after a response), and one that trickles a byte
every few seconds is held forever too (each byte cancels the timer). `guarded_protocol` wraps
uvicorn's HTTP protocol class so that a whole request head must arrive within ``head_timeout``
seconds of the connection opening or of the previous response ending, and must not exceed
``max_head_bytes`` (uvicorn's httptools parser takes headers of any size). A late head is answered
408, an oversized one 431, and the connection is closed: pure protocol-level, before any ASGI app
sees the request.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agent_pay.boundary.limits import ServerLimits

__all__ = ["guarded_protocol"]


def _answer(status: str, reason: str, message: str) -> bytes:
    body = json.dumps({"error": reason, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


_TIMEOUT = _answer("408 Request Timeout", "request_timeout", "the request head came too slowly")
_TOO_LARGE = _answer(
    "431 Request Header Fields Too Large", "request_too_large", "the request head is too large"
)


def guarded_protocol(base: type[asyncio.Protocol], limits: ServerLimits) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol class ``base`` that enforces ``limits`` on heads."""

    class Guarded(base):  # type: ignore[valid-type,misc]
        # uvicorn's protocols keep `transport`, `cycle` (the current request) and `loop`.
        _head_deadline: asyncio.TimerHandle | None = None
        _head_bytes = 0
        _head_tail = b""

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._await_head()

        def data_received(self, data: bytes) -> None:
            waiting = self._head_deadline is not None
            if waiting and self._head_too_large(data):
                self._refuse(_TOO_LARGE)
                return
            before = self.cycle
            super().data_received(data)
            if waiting and self.cycle is not before:  # a head was parsed: the app has it now
                self._head_arrived()

        def _head_too_large(self, data: bytes) -> bool:
            """Whether the head being received runs past `max_head_bytes`: checked on the raw
            bytes before the parser sees them, however they are split into chunks."""
            window = self._head_tail + data
            end = window.find(b"\r\n\r\n")
            if end >= 0:
                size = self._head_bytes - len(self._head_tail) + end + 4
            else:
                size = self._head_bytes + len(data)
                self._head_tail = window[-3:]
            self._head_bytes += len(data)
            return size > limits.max_head_bytes

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and (
                self.cycle is None or self.cycle.response_complete
            ):
                self._await_head()  # idle until the next request: its head has a deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_arrived()
            super().connection_lost(exc)

        def _await_head(self) -> None:
            self._head_arrived()
            self._head_bytes, self._head_tail = 0, b""
            self._head_deadline = self.loop.call_later(limits.head_timeout, self._head_late)

        def _head_arrived(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _head_late(self) -> None:
            self._head_deadline = None
            if self._head_bytes:
                self._refuse(_TIMEOUT)
            elif not self.transport.is_closing():
                self.transport.close()  # a silent connection gets no answer, only closed

        def _refuse(self, answer: bytes) -> None:
            self._head_arrived()
            if not self.transport.is_closing():
                self.transport.write(answer)
                self.transport.close()

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded
