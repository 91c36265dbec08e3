"""`ServerLimits`: how long, how large and how many, for every server agent-pay ships."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ServerLimits"]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Bounds on what one client can make a server hold. The defaults suit every server we ship.

    Args:
        head_timeout: seconds a connection may take to send a whole request head (request line
            and headers), counted from when it opens or its previous response ended. A silent
            new connection, or one trickling its headers (slowloris), is closed after it.
        keep_alive_timeout: seconds an idle keep-alive connection is kept between requests.
        max_head_bytes: the largest request head read; a larger one is answered 431.
        body_timeout: seconds a server that reads a request body (the node, the facilitator)
            waits for all of it; a slower one is answered 408.
        max_connections: open connections and in-flight requests at once; a request beyond them
            is answered 503 (uvicorn's ``limit_concurrency``).
        backlog: connections the kernel queues before they are accepted.
    """

    head_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    max_head_bytes: int = 32 * 1024
    body_timeout: float = 30.0
    max_connections: int = 2048
    backlog: int = 2048

    def __post_init__(self) -> None:
        for name in ("head_timeout", "keep_alive_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("max_head_bytes", "max_connections", "backlog"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
