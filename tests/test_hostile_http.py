"""The facilitator service and the content server under hostile HTTP, and the connection limits
every server we ship runs under: a clear status with a machine-readable reason for every bad
input, never a 500, and no connection held open without limit."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from agent_pay.boundary import ServerLimits
from agent_pay.facilitator.http import (
    MAX_BODY_BYTES,
    HttpFacilitatorClient,
    create_facilitator_app,
)
from agent_pay.node.jsonrpc import create_rpc_app
from agent_pay.node.node import Node
from agent_pay.protocol import (
    X402_VERSION,
    ExactEvmPayload,
    FacilitatorRequest,
    PaymentPayload,
    PaymentRequired,
)
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
)
from agent_pay.serving import serve_app
from agent_pay.signing import (
    LocalSigner,
    TokenDomain,
    TransferAuthorization,
    random_nonce,
    sign_transfer_authorization,
)
from agent_pay.stack import Stack

SLUG = "why-micropayments-failed"
BOMB = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with Stack.embedded() as stack:
        yield stack


@pytest.fixture(scope="module")
def facilitator_url(stack: Stack) -> Iterator[str]:
    with serve_app(create_facilitator_app(stack.facilitator)) as url:
        yield url


def offer(stack: Stack) -> PaymentRequired:
    with stack.serve() as base:
        answer = httpx.get(f"{base}/articles/{SLUG}")
    assert answer.status_code == 402
    return decode_header(answer.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)


def payment(
    signer: LocalSigner, required: PaymentRequired, value: str | None = None
) -> PaymentPayload:
    accepted = required.accepts[0]
    now = int(time.time())
    auth = TransferAuthorization(
        from_=signer.address,
        to=accepted.pay_to,
        value=int(value or accepted.amount),
        valid_after=now - 600,
        valid_before=now + accepted.max_timeout_seconds,
        nonce=random_nonce(),
    )
    signature = sign_transfer_authorization(signer, TokenDomain.from_requirements(accepted), auth)
    return PaymentPayload(
        x402_version=X402_VERSION,
        resource=required.resource,
        accepted=accepted,
        payload=ExactEvmPayload(
            signature="0x" + signature.hex(), authorization=auth.to_wire()
        ).to_wire(),
    )


def request_body(paid: PaymentPayload) -> dict[str, Any]:
    body = FacilitatorRequest(
        x402_version=X402_VERSION, payment_payload=paid, payment_requirements=paid.accepted
    )
    loaded: dict[str, Any] = json.loads(body.to_json())
    return loaded


# -- the facilitator service


@pytest.mark.parametrize("path", ["/verify", "/settle"])
@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"[" * 30_000 + b"]" * 30_000, 400, "json_too_deep"),  # under the size cap
        (BOMB, 413, "request_too_large"),
        (
            b'{"x402Version": 2, "paymentPayload": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            400,
            "json_too_deep",
        ),
        (b"not json", 400, "invalid_payment_header"),
        (b"{}", 400, "invalid_payload"),
        (b'{"x402Version": 1}', 400, "invalid_x402_version"),
        (b" " * (MAX_BODY_BYTES + 1), 413, "request_too_large"),
    ],
)
def test_an_unreadable_body_is_refused_with_its_reason(
    facilitator_url: str, path: str, body: bytes, status: int, reason: str
) -> None:
    answer = httpx.post(facilitator_url + path, content=body, timeout=30)
    assert (answer.status_code, answer.json()["error"]) == (status, reason)


def test_a_streamed_oversized_body_is_413(facilitator_url: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY_BYTES // 4096 + 2):
            yield b" " * 4096

    answer = httpx.post(facilitator_url + "/verify", content=chunks())
    assert (answer.status_code, answer.json()["error"]) == (413, "request_too_large")


@pytest.mark.parametrize("path", ["/verify", "/settle"])
def test_a_payload_that_does_not_fit_its_scheme_is_400(
    stack: Stack, facilitator_url: str, path: str
) -> None:
    body = request_body(payment(LocalSigner.random(), offer(stack)))
    body["paymentPayload"]["payload"]["authorization"]["value"] = "ten"
    answer = httpx.post(facilitator_url + path, json=body)
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_payload")
    del body["paymentPayload"]["payload"]["signature"]
    assert httpx.post(facilitator_url + path, json=body).status_code == 400


def test_a_real_refusal_stays_200_is_valid_false(stack: Stack, facilitator_url: str) -> None:
    broke = LocalSigner.random()  # a well-formed payment from a payer holding nothing
    answer = httpx.post(
        facilitator_url + "/verify", json=request_body(payment(broke, offer(stack)))
    )
    assert answer.status_code == 200
    verdict = answer.json()
    assert verdict["isValid"] is False
    assert verdict["invalidReason"] == "invalid_exact_evm_insufficient_balance"


def test_the_http_client_reads_a_400_back_as_a_refusal(stack: Stack, facilitator_url: str) -> None:
    paid = payment(LocalSigner.random(), offer(stack))
    wire = paid.payload["authorization"]
    malformed = paid.model_copy(
        update={"payload": {**paid.payload, "authorization": {**wire, "value": "ten"}}}
    )

    async def ask() -> tuple[Any, Any]:
        client = HttpFacilitatorClient(facilitator_url)
        try:
            return (
                await client.verify(malformed, paid.accepted),
                await client.settle(malformed, paid.accepted),
            )
        finally:
            await client.aclose()

    verdict, outcome = asyncio.run(ask())
    assert (verdict.is_valid, verdict.invalid_reason) == (False, "invalid_payload")
    assert (outcome.success, outcome.error_reason) == (False, "invalid_payload")


# -- the content server's payment header


def test_a_nested_payment_header_is_400(stack: Stack) -> None:
    deep = base64.b64encode(b"[" * 3000 + b"]" * 3000).decode()
    with stack.serve() as base:
        answer = httpx.get(f"{base}/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: deep})
    assert (answer.status_code, answer.json()["error"]) == (400, "json_too_deep")


def test_a_huge_header_is_431_not_read(stack: Stack) -> None:
    with stack.serve() as base:
        answer = httpx.get(f"{base}/articles/{SLUG}", headers={"x-junk": "a" * 100_000})
    assert answer.status_code == 431
    assert answer.json()["error"] == "request_too_large"


# -- connections: every server runs under the same limits


async def _slow(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("s", "0")))
    return PlainTextResponse("ok")


SHORT = ServerLimits(head_timeout=1.0, keep_alive_timeout=1.0, max_connections=4, body_timeout=1.0)


@pytest.fixture(scope="module", params=["content", "facilitator", "node"])
def server(request: pytest.FixtureRequest, stack: Stack) -> Iterator[tuple[str, str]]:
    """Each server's app under SHORT limits, and a path it answers GET on."""
    with ExitStack() as resources:
        if request.param == "content":
            app, path = stack.app, "/articles"
        elif request.param == "facilitator":
            app, path = create_facilitator_app(stack.facilitator, SHORT), "/supported"
        else:
            node = resources.enter_context(Node.open(None))
            app, path = create_rpc_app(node.api, SHORT), "/"
        yield resources.enter_context(serve_app(app, limits=SHORT)), path


def _socket(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)))
    connection.settimeout(10)
    return connection


@pytest.mark.slow  # waits out the server's 1 s timeout, on each server
def test_a_silent_connection_is_closed(server: tuple[str, str]) -> None:
    with _socket(server[0]) as connection:
        started = time.monotonic()
        assert connection.recv(100) == b""  # closed by the server, nothing said
        assert 0.5 < time.monotonic() - started < 5


@pytest.mark.slow  # waits out the server's 1 s timeout, on each server
def test_a_trickling_head_is_cut_off_with_408(server: tuple[str, str]) -> None:
    url, path = server
    with _socket(url) as connection:
        started = time.monotonic()
        head = f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode() + b"a" * 100
        answer = b""
        for byte in head:  # one byte every 50 ms: each would reset a keep-alive timer
            try:
                connection.send(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
            connection.setblocking(False)
            try:
                answer = connection.recv(200)
            except BlockingIOError:
                pass
            finally:
                connection.setblocking(True)
            if answer:
                break
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"request_timeout" in answer
        assert time.monotonic() - started < 5


@pytest.mark.slow  # waits out the server's 1 s timeout, on each server
def test_an_idle_keep_alive_connection_is_closed(server: tuple[str, str]) -> None:
    url, path = server
    with _socket(url) as connection:
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = connection.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
        started = time.monotonic()
        while connection.recv(65536):
            pass  # the rest of the first answer, then the close
        assert time.monotonic() - started < 5


def test_requests_beyond_the_connection_limit_are_503() -> None:
    app = Starlette(routes=[Route("/", _slow)])
    with serve_app(app, limits=SHORT) as url:
        held = [_socket(url) for _ in range(SHORT.max_connections)]
        time.sleep(0.2)
        try:
            assert httpx.get(url).status_code == 503  # uvicorn's limit_concurrency
        finally:
            for connection in held:
                connection.close()
        time.sleep(0.2)
        assert httpx.get(url).status_code == 200
