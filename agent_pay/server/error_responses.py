"""One exception handler maps every `AgentPayError` a route raises to its HTTP answer.

Each error knows its status (`agent_pay.errors`); the body is `{error: <reason>, message}`.
An unavailable chain, ledger or content (503) also says when to try again (`Retry-After`).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from agent_pay.errors import AgentPayError, ChainUnavailableError

__all__ = ["error_response", "handle_errors"]


def error_response(exc: AgentPayError) -> JSONResponse:
    """`exc` as the server answers it."""
    headers = (
        {"Retry-After": str(exc.retry_after)} if isinstance(exc, ChainUnavailableError) else None
    )
    return JSONResponse({"error": exc.reason, "message": exc.message}, exc.status_code, headers)


def handle_errors(app: FastAPI) -> None:
    """Answer every `AgentPayError` raised in `app` with `error_response`."""

    async def handler(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, AgentPayError)  # registered for AgentPayError only
        return error_response(exc)

    app.add_exception_handler(AgentPayError, handler)
