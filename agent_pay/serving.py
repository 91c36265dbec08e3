"""Serving an ASGI app on uvicorn in a background thread: the content server, the facilitator
service and the node's JSON-RPC endpoint all start this way, under one `ServerLimits`."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from agent_pay.boundary import ServerLimits
from agent_pay.boundary.connections import guarded_protocol

__all__ = ["ServerLimits", "serve_app", "uvicorn_config"]


def uvicorn_config(
    app: FastAPI | ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    limits: ServerLimits | None = None,
) -> uvicorn.Config:
    """uvicorn's configuration for `app` under `limits` (the defaults when None)."""
    limits = limits or ServerLimits()
    # lifespan "auto": an app with startup work (the content server reconciles its ledger)
    # gets to do it before the first connection is accepted.
    # uvicorn's own choice ("auto": httptools if installed, else h11), wrapped with the guard.
    protocol = guarded_protocol(import_from_string(HTTP_PROTOCOLS["auto"]), limits)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="auto",
        timeout_keep_alive=max(1, round(limits.keep_alive_timeout)),
        limit_concurrency=limits.max_connections,
        backlog=limits.backlog,
        h11_max_incomplete_event_size=limits.max_head_bytes,
        http=protocol,
    )


@contextmanager
def serve_app(
    app: FastAPI | ASGIApp,
    host: str = "127.0.0.1",
    port: int = 0,
    limits: ServerLimits | None = None,
    *,
    sock: socket.socket | None = None,
) -> Iterator[str]:
    """Serve `app` with uvicorn in a daemon thread until the block exits; yield its URL.
    With `sock`, a listening socket (one of several worker processes': `--workers`), accept
    on it instead of binding `host`:`port`."""
    server = uvicorn.Server(uvicorn_config(app, host, port, limits))
    sockets = None if sock is None else [sock]
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": sockets}, name="agent-pay-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise OSError(f"could not serve on {host}:{port}")
        time.sleep(0.005)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
