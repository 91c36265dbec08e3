"""The facilitator over HTTP: x402 v2's `POST /verify`, `POST /settle`, `GET /supported`.

`create_facilitator_app` serves any `Facilitator`; `HttpFacilitatorClient` is a `Facilitator`
that calls a remote one (ours or a stock x402 facilitator). Payment outcomes are 200 with
`isValid`/`success` false and a reason, as x402 facilitators answer. A body that is not a
`FacilitatorRequest` whose payload fits its scheme is 400 with the reason (`invalid_payload`,
`invalid_payment_header`, `invalid_x402_version`, `json_too_deep`), a body over `MAX_BODY_BYTES`
413 before the rest is read, a body slower than the server's body timeout 408; chain trouble is
503 with Retry-After (one handler answers every `AgentPayError`:
`agent_pay.boundary.error_responses`).

With the channel handler it settles with, the app also serves the channel seam's endpoints
(`POST /channels/accept`, ...: `agent_pay.facilitator.channel.endpoints`), which
`agent_pay.facilitator.channel.remote.HttpChannelFacilitator` calls.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response

from agent_pay.boundary import ServerLimits, read_body
from agent_pay.boundary.error_responses import handle_errors
from agent_pay.errors import ChainUnavailableError, MalformedPaymentError, Reason
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

if TYPE_CHECKING:
    from agent_pay.facilitator.channel.scheme import ChannelEvmScheme

__all__ = ["HttpFacilitatorClient", "create_facilitator_app"]

M = TypeVar("M", bound=WireModel)

MAX_BODY_BYTES = 64 * 1024

_TX_HASH = re.compile(r"0x[0-9a-fA-F]{64}")

SCHEMA_REASONS = frozenset(
    {
        Reason.INVALID_HEADER,
        Reason.INVALID_PAYLOAD,
        Reason.INVALID_X402_VERSION,
        Reason.JSON_TOO_DEEP,
    }
)
"""Refusals that say the request does not fit the schema: 400, not a 200 payment outcome."""


def _json(model: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(model.to_json(), status, headers, media_type="application/json")


def create_facilitator_app(
    facilitator: Facilitator,
    limits: ServerLimits | None = None,
    *,
    channels: ChannelEvmScheme | None = None,
) -> FastAPI:
    """An ASGI app exposing `facilitator` under x402 v2's facilitator endpoints, and, with
    `channels` (the channel handler `facilitator` settles with), the channel seam's endpoints
    (`agent_pay.facilitator.channel.endpoints`)."""
    app = FastAPI(title="agent-pay facilitator", docs_url=None, redoc_url=None)
    body_timeout = (limits or ServerLimits()).body_timeout

    async def read_request(request: Request) -> FacilitatorRequest:
        body = await read_body(request, MAX_BODY_BYTES, body_timeout)
        return decode_json(body, FacilitatorRequest)

    handle_errors(app, settlement_trouble=True)

    @app.post("/verify")
    async def verify(request: Request) -> Response:
        body = await read_request(request)
        verdict = await facilitator.verify(body.payment_payload, body.payment_requirements)
        if verdict.invalid_reason in SCHEMA_REASONS:  # the scheme could not read its payload
            raise MalformedPaymentError(
                verdict.invalid_message or "", Reason(verdict.invalid_reason)
            )
        return _json(verdict)

    @app.post("/settle")
    async def settle(request: Request) -> Response:
        body = await read_request(request)
        outcome = await facilitator.settle(body.payment_payload, body.payment_requirements)
        if outcome.error_reason in SCHEMA_REASONS:
            raise MalformedPaymentError(outcome.error_message or "", Reason(outcome.error_reason))
        return _json(outcome)

    @app.get("/supported")
    async def supported() -> Response:
        return _json(await facilitator.supported())

    if channels is not None:
        from agent_pay.facilitator.channel.endpoints import channel_endpoints

        async def read_capped(request: Request, max_bytes: int) -> bytes:
            return await read_body(request, max_bytes, body_timeout)

        app.include_router(channel_endpoints(channels, read_capped))
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
        if isinstance(raw, tuple):
            reason, message = raw
            return VerifyResponse(is_valid=False, invalid_reason=reason, invalid_message=message)
        return _read(raw, VerifyResponse)

    async def settle(
        self, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> SettleResponse:
        raw = await self._post("/settle", payment, requirements)
        if isinstance(raw, tuple):
            reason, message = raw
            return SettleResponse(
                success=False,
                error_reason=reason,
                error_message=message,
                transaction="",
                network=requirements.network,
            )
        return _read(raw, SettleResponse)

    async def supported(self) -> SupportedResponse:
        response = await self._request("GET", "/supported")
        return _read(response.content, SupportedResponse)

    async def _post(
        self, path: str, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> bytes | tuple[str, str]:
        """The 200 answer's body, or (reason, message) of a 400 that refuses the payload."""
        body = FacilitatorRequest(
            x402_version=X402_VERSION, payment_payload=payment, payment_requirements=requirements
        )
        response = await self._request(
            "POST",
            path,
            content=body.to_json(),
            headers={"content-type": "application/json"},
            refusal_ok=True,
        )
        refusal = _schema_refusal(response) if response.status_code == 400 else None
        return refusal if refusal is not None else response.content

    async def _request(
        self, method: str, path: str, *, refusal_ok: bool = False, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ChainUnavailableError(f"facilitator unreachable: {exc}") from exc
        if refusal_ok and response.status_code == 400 and _schema_refusal(response) is not None:
            return response
        if response.status_code != 200:
            broadcast, transaction = _settlement_trouble(response)
            raise ChainUnavailableError(
                f"facilitator answered {response.status_code}: {response.text[:200]}",
                broadcast=broadcast,
                transaction=transaction,
            )
        return response


def _settlement_trouble(response: httpx.Response) -> tuple[bool | None, str | None]:
    """From a 503: whether the settlement reached the node, and the transaction that may still
    be mined, as agent-pay's facilitator says them; (None, None) when it does not say."""
    if response.status_code != 503:
        return None, None
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    broadcast = body.get("broadcast")
    transaction = body.get("transaction")
    if not isinstance(transaction, str) or not _TX_HASH.fullmatch(transaction):
        transaction = None
    return (broadcast if isinstance(broadcast, bool) else None), transaction


def _schema_refusal(response: httpx.Response) -> tuple[str, str] | None:
    """(reason, message) when a 400 says the payload does not fit the schema: the payer's fault,
    answered as a refused payment. Any other 400 is the facilitator's or ours: None."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("error") not in SCHEMA_REASONS:
        return None
    message = body.get("message")
    return str(body["error"]), message if isinstance(message, str) else ""
