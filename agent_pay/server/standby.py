"""The content server while its chain cannot be reached: free previews now, paid reads later.

`agent-pay serve` needs the chain to build its offers (the chain id, each token's EIP-712 domain
and decimals) and its facilitator. A server that refused to start while its node was down gave
clients "connection refused" instead of previews. `StandbyApp` starts at once instead: until
`build()` succeeds it serves `create_standby_app` (the catalogue and every article's free preview
as a 402 with no offer yet, ``error: chain_unavailable`` and ``Retry-After``; a paid read or a
re-read 503 with ``Retry-After``), and it tries `build()` again, in a worker thread, at most every
`retry_every` seconds as requests come. Once built, every request goes to the real app, for good;
no restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from agent_pay.errors import Reason
from agent_pay.protocol import PaymentRequired, ResourceInfo
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    encode_header,
)
from agent_pay.protocol.extensions import ENTITLEMENT_HEADER
from agent_pay.server.catalogue import Article, Catalogue

__all__ = ["RETRY_AFTER", "StandbyApp", "create_standby_app"]

log = logging.getLogger(__name__)

RETRY_AFTER = 2
"""Seconds a client is told to wait before it tries a paid read again."""

_PAID_HEADERS = (PAYMENT_SIGNATURE_HEADER, ENTITLEMENT_HEADER)


def create_standby_app(catalogue: Catalogue) -> FastAPI:
    """Previews without a chain: what the content server answers until it can build offers."""
    app = FastAPI(title="agent-pay content server (chain unavailable)", docs_url=None)
    message = "the chain is unavailable: no payment can be taken now; retry later"
    retry = {"Retry-After": str(RETRY_AFTER)}

    def summary(article: Article) -> dict[str, Any]:
        return {
            "slug": article.slug,
            "title": article.title,
            "author": article.author,
            "authorName": article.author_name,
            "summary": article.summary,
            "tags": list(article.tags),
            "prices": [
                {"token": symbol, "price": str(price)} for symbol, price in article.prices.items()
            ],
        }

    @app.get("/")
    async def index() -> dict[str, Any]:
        return {"service": "agent-pay", "articles": "/articles", "x402Version": 2}

    @app.get("/articles")
    async def list_articles() -> dict[str, Any]:
        return {"articles": [summary(a) for a in catalogue]}

    @app.get("/articles/{slug}")
    async def read_article(slug: str, request: Request) -> Response:
        article = catalogue.get(slug)
        if article is None:
            return JSONResponse({"error": Reason.NOT_FOUND, "message": "no such article"}, 404)
        error = {"error": Reason.CHAIN_UNAVAILABLE, "message": message}
        if any(name in request.headers for name in _PAID_HEADERS):
            return JSONResponse(error, 503, retry)
        required = PaymentRequired(
            error=Reason.CHAIN_UNAVAILABLE,
            resource=ResourceInfo(url=str(request.url), description=article.title),
            accepts=[],
        )
        body = {**summary(article), "content": article.preview, "complete": False, **error}
        headers = {PAYMENT_REQUIRED_HEADER: encode_header(required), **retry}
        return JSONResponse(body, 402, headers)

    return app


class StandbyApp:
    """An ASGI app that serves `standby` until `build()` returns the real app, then that.

    `build` runs in a worker thread; it raises while the chain cannot be reached (any exception
    counts: the server must keep serving previews whatever a retry meets; each new kind of
    failure is logged). At startup (ASGI lifespan) it is tried once, and if it succeeds the
    real app gets the lifespan too (the content server reconciles its ledger then). `on_ready`
    is called with the real app once, from the event loop.
    """

    def __init__(
        self,
        build: Callable[[], ASGIApp],
        standby: ASGIApp,
        *,
        retry_every: float = 2.0,
        on_ready: Callable[[ASGIApp], None] | None = None,
    ) -> None:
        self._build = build
        self._standby = standby
        self._retry_every = retry_every
        self._on_ready = on_ready
        self._app: ASGIApp | None = None
        self._next_try = 0.0
        self._building: asyncio.Lock | None = None
        self.last_error: BaseException | None = None

    @property
    def ready(self) -> bool:
        return self._app is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            await self._try_build(wait=scope["type"] == "lifespan")
        app = self._app
        if app is not None:
            await app(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _bare_lifespan(receive, send)
        else:
            await self._standby(scope, receive, send)

    async def _try_build(self, *, wait: bool) -> None:
        """Build if it is time; a request never waits for another's build (only startup does)."""
        if self._building is None:
            self._building = asyncio.Lock()
        if (self._building.locked() and not wait) or time.monotonic() < self._next_try:
            return
        async with self._building:
            if self._app is not None:
                return
            try:
                app = await to_thread.run_sync(self._build)
            except Exception as exc:
                self._next_try = time.monotonic() + self._retry_every
                if type(exc) is not type(self.last_error):
                    log.warning("chain unavailable, serving previews only: %s", exc)
                self.last_error = exc
                return
            self._app = app
            if self._on_ready is not None:
                self._on_ready(app)


async def _bare_lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
