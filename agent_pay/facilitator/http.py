"""The facilitator over HTTP: x402 v2's `POST /verify`, `POST /settle`, `GET /supported`.

`create_facilitator_app` serves any `Facilitator`; `HttpFacilitatorClient` is a `Facilitator`
that calls a remote one (ours or a stock x402 facilitator). Payment outcomes are 200 with
`isValid`/`success` false and a reason, as x402 facilitators answer; an unreadable body is 400;
chain trouble is 503 with Retry-After.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from agent_pay.errors import ChainUnavailableError, MalformedPaymentError
from agent_pay.facilitator.base import Facilitator
from agent_pay.protocol import (
    X402_VERSION,
    FacilitatorRequest,
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    SupportedResponse,
    VerifyResponse,
    WireModel,
)
from agent_pay.protocol.codec import decode_json

__all__ = ["HttpFacilitatorClient", "create_facilitator_app"]

M = TypeVar("M", bound=WireModel)

MAX_BODY_BYTES = 64 * 1024


def _json(model: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(model.to_json(), status, headers, media_type="application/json")


def create_facilitator_app(facilitator: Facilitator) -> FastAPI:
    """An ASGI app exposing `facilitator` under x402 v2's facilitator endpoints."""
    app = FastAPI(title="agent-pay facilitator", docs_url=None, redoc_url=None)

    async def read_request(request: Request) -> FacilitatorRequest:
        body = await request.body()
        return decode_json(body, FacilitatorRequest, max_bytes=MAX_BODY_BYTES)

    @app.exception_handler(MalformedPaymentError)
    async def malformed(_: Request, exc: MalformedPaymentError) -> Response:
        return JSONResponse({"error": exc.reason, "message": exc.message}, 400)

    @app.exception_handler(ChainUnavailableError)
    async def unavailable(_: Request, exc: ChainUnavailableError) -> Response:
        return JSONResponse(
            {"error": exc.reason, "message": exc.message},
            503,
            headers={"Retry-After": str(exc.retry_after)},
        )

    @app.post("/verify")
    async def verify(request: Request) -> Response:
        body = await read_request(request)
        return _json(await facilitator.verify(body.payment_payload, body.payment_requirements))

    @app.post("/settle")
    async def settle(request: Request) -> Response:
        body = await read_request(request)
        return _json(await facilitator.settle(body.payment_payload, body.payment_requirements))

    @app.get("/supported")
    async def supported() -> Response:
        return _json(await facilitator.supported())

    return app


def _read(raw: bytes, model: type[M]) -> M:
    """A facilitator's answer; an unreadable one is the facilitator's fault, not the payer's."""
    try:
        return decode_json(raw, model)
    except MalformedPaymentError as exc:
        raise ChainUnavailableError(f"facilitator sent an unreadable answer: {exc}") from exc


class HttpFacilitatorClient:
    """A `Facilitator` that forwards to a remote facilitator at `base_url`."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def verify(
        self, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> VerifyResponse:
        raw = await self._post("/verify", payment, requirements)
        return _read(raw, VerifyResponse)

    async def settle(
        self, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> SettleResponse:
        raw = await self._post("/settle", payment, requirements)
        return _read(raw, SettleResponse)

    async def supported(self) -> SupportedResponse:
        response = await self._request("GET", "/supported")
        return _read(response.content, SupportedResponse)

    async def _post(
        self, path: str, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> bytes:
        body = FacilitatorRequest(
            x402_version=X402_VERSION, payment_payload=payment, payment_requirements=requirements
        )
        response = await self._request(
            "POST", path, content=body.to_json(), headers={"content-type": "application/json"}
        )
        return response.content

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ChainUnavailableError(f"facilitator unreachable: {exc}") from exc
        if response.status_code != 200:
            raise ChainUnavailableError(
                f"facilitator answered {response.status_code}: {response.text[:200]}"
            )
        return response
