"""One exception handler maps every `AgentPayError` a route raises to its HTTP answer, in the
content server and the facilitator service alike.

Each error knows its status (`agent_pay.errors`); the body is `{error: <reason>, message}`.
An unavailable chain, ledger or content (503) also says when to try again (`Retry-After`).
A facilitator also says, of a settlement it could not finish, whether its transaction reached
the node and which one may still be mined (`broadcast`, `transaction`): its caller must know
whether the payer may still be charged.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from agent_pay.errors import AgentPayError, ChainUnavailableError

__all__ = ["error_response", "handle_errors"]


def error_response(exc: AgentPayError, *, settlement_trouble: bool = False) -> JSONResponse:
    """`exc` as a server answers it; with `settlement_trouble`, as a facilitator does (a 503
    also states `broadcast` and `transaction` when known)."""
    body: dict[str, Any] = {"error": exc.reason, "message": exc.message}
    headers: dict[str, str] | None = None
    if isinstance(exc, ChainUnavailableError):
        headers = {"Retry-After": str(exc.retry_after)}
        if settlement_trouble and exc.broadcast is not None:
            body["broadcast"] = exc.broadcast
        if settlement_trouble and exc.transaction is not None:
            body["transaction"] = exc.transaction
    return JSONResponse(body, exc.status_code, headers)


def handle_errors(app: FastAPI, *, settlement_trouble: bool = False) -> None:
    """Answer every `AgentPayError` raised in `app` with `error_response`."""

    async def handler(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, AgentPayError)  # registered for AgentPayError only
        return error_response(exc, settlement_trouble=settlement_trouble)

    app.add_exception_handler(AgentPayError, handler)
