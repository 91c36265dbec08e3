"""A content server behind a remote facilitator that misbehaves (`Liar`: its channel endpoints
answer 500s, garbage, too slowly, or well-formed answers about another voucher, payer or
resource than asked): the server answers 400/402/503 with a reason, never the article unless
the read was paid, never a 500. (The service of `tests.test_channel_remote` is reused for the
chain, the deposits and the vouchers.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from agent_pay.assembly.channels import channel_server
from agent_pay.errors import Reason
from agent_pay.facilitator.channel.remote import HttpChannelFacilitator
from agent_pay.facilitator.http import HttpFacilitatorClient
from agent_pay.protocol import PaymentPayload
from agent_pay.protocol.codec import PAYMENT_SIGNATURE_HEADER, encode_header
from agent_pay.protocol.extensions import ENTITLEMENT_HEADER
from agent_pay.server.app import create_server
from agent_pay.serving import serve_app
from agent_pay.testing import TestAgent
from tests._entitlement import challenge_for, proof_header
from tests.test_channel_remote import (
    PRICE,
    Remote,
    _accept_body,
    channel_agent,
    closing,
    remote,
)
from tests.test_e2e_channel import QUIET

__all__ = ["remote"]  # the fixture, shared with tests.test_channel_remote

STRANGER = "0x" + "12" * 20


class Liar:
    """A facilitator whose `/channels/accept` answers whatever `answer` says."""

    def __init__(self) -> None:
        self.answer: tuple[int, bytes, float] = (200, b"{}", 0.0)  # status, body, delay
        self.releases = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/channels/release":
            self.releases += 1
        status, body, delay = self.answer
        await asyncio.sleep(delay)
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@contextmanager
def behind(remote: Remote, liar: Liar) -> Iterator[httpx.Client]:
    """A client of a content server whose channels `liar` keeps (1 s timeout); its URL is the
    client's base URL."""
    with serve_app(liar) as liar_url:
        channels = HttpChannelFacilitator(liar_url, remote.channels.terms, timeout=1)
        facilitator = HttpFacilitatorClient(remote.facilitator)
        offers, _ = channel_server(remote.bed.assets, channels, QUIET)
        app = create_server(
            remote.bed.catalogue, remote.bed.assets, facilitator, schemes=[offers]
        ).app
        with (
            serve_app(closing(app, channels, facilitator)) as url,
            httpx.Client(base_url=url, timeout=10) as http,
        ):
            yield http


def _pay(remote: Remote, agent: TestAgent, liar: Liar, slug: str) -> httpx.Response:
    """`agent`'s voucher (cumulative 2 reads) for `slug`, at a server behind `liar`."""
    with behind(remote, liar) as http:
        base = str(http.base_url).rstrip("/")
        body = _accept_body(remote, agent, slug, cumulative=2 * PRICE, base=base)
        payment = PaymentPayload.from_wire(body["paymentPayload"])
        return http.get(
            f"/articles/{slug}", headers={PAYMENT_SIGNATURE_HEADER: encode_header(payment)}
        )


def _acceptance(agent: TestAgent, statement: object, **changes: object) -> bytes:
    assert agent.channels is not None
    (record,) = agent.channels.channels()
    accepted = {
        "channelId": record.channel_id,
        "payer": agent.address,
        "cumulativeAmount": str(2 * PRICE),
        "price": str(PRICE),
        "replayed": False,
        "statement": statement,
        "releaseToken": "ab" * 32,
        **changes,
    }
    return json.dumps({"acceptance": accepted}).encode()


ANSWERS: dict[str, Callable[[TestAgent], tuple[int, bytes, float]]] = {
    "500": lambda _: (500, b"Internal Server Error", 0.0),
    "502 html": lambda _: (502, b"<html>bad gateway</html>", 0.0),
    "404": lambda _: (404, b'{"detail": "Not Found"}', 0.0),
    "garbage": lambda _: (200, b"\x00\xffnot json", 0.0),
    "a list": lambda _: (200, b"[]", 0.0),
    "both": lambda a: (200, _acceptance(a, {})[:-1] + b', "refusal": {}}', 0.0),
    "slow": lambda _: (200, b"{}", 3.0),
    "400 no reason": lambda _: (400, b"bad", 0.0),
    "400 unknown reason": lambda _: (400, b'{"error": "no_such_reason"}', 0.0),
    "refusal, unknown reason": lambda _: (
        200,
        b'{"refusal": {"reason": "free_read", "message": "take it"}}',
        0.0,
    ),
    "empty statement": lambda a: (200, _acceptance(a, {}), 0.0),
    "statement not an object": lambda a: (200, _acceptance(a, "paid")[:-1] + b"}", 0.0),
    "statement of odd types": lambda a: (
        200,
        _acceptance(a, {"channelId": 7, "highest": -1, "payer": [], "served": "lots"}),
        0.0,
    ),
    "negative price": lambda a: (200, _acceptance(a, {}, price="-1"), 0.0),
    "odd channel id": lambda a: (200, _acceptance(a, {}, channelId="0x12"), 0.0),
}


@pytest.mark.parametrize("misbehaviour", sorted(ANSWERS))
def test_a_facilitator_that_misbehaves_is_a_503_or_402_never_content(
    remote: Remote, misbehaviour: str
) -> None:
    agent = channel_agent(remote)
    slug = f"note-{100 + sorted(ANSWERS).index(misbehaviour):03d}"
    with httpx.Client(base_url=remote.server, auth=agent.auth) as http:
        assert http.get("/articles/note-099").status_code == 200  # opens the channel
    liar = Liar()
    liar.answer = ANSWERS[misbehaviour](agent)
    response = _pay(remote, agent, liar, slug)
    assert response.status_code in (400, 402, 503), response.text
    assert "error" in response.json()
    if response.status_code == 503:
        assert "Retry-After" in response.headers


def _paid_read(payer: str, resource: str) -> bytes:
    record = {
        "channelId": "0x" + "ab" * 32,
        "cumulative": str(PRICE),
        "payer": payer,
        "payee": "0x" + "cd" * 20,
        "token": "0x" + "ef" * 20,
        "resource": resource,
        "url": resource,
        "price": str(PRICE),
        "at": 0.0,
    }
    return json.dumps({"paidRead": record}).encode()


PAID_READS: dict[str, Callable[[TestAgent, str], tuple[int, bytes, float]]] = {
    "500": lambda _a, _p: (500, b"oops", 0.0),
    "garbage": lambda _a, _p: (200, b"\xff", 0.0),
    "slow": lambda _a, _p: (200, b"{}", 3.0),
    "a record of odd types": lambda _a, _p: (200, b'{"paidRead": {"payer": 7}}', 0.0),
    "another payer's read": lambda _a, path: (200, _paid_read(STRANGER, path), 0.0),
    "another resource's read": lambda a, _p: (200, _paid_read(a.address, "/articles/x"), 0.0),
}


@pytest.mark.parametrize("misbehaviour", sorted(PAID_READS))
def test_a_re_read_asked_of_a_facilitator_that_misbehaves_shows_no_content(
    remote: Remote, misbehaviour: str
) -> None:
    agent = channel_agent(remote)
    liar = Liar()
    slug = "note-120"
    liar.answer = PAID_READS[misbehaviour](agent, f"/articles/{slug}")
    with behind(remote, liar) as http:
        path = f"/articles/{slug}"
        header = proof_header(agent.signer, challenge_for(http, slug), path)
        response = http.get(path, headers={ENTITLEMENT_HEADER: header})
    assert response.status_code in (402, 503), response.text
    assert response.json()["complete"] is False if response.status_code == 402 else True
    assert "error" in response.json()


@pytest.mark.parametrize(
    ("change", "served"),
    [
        ({}, True),  # the control: an acceptance of this very voucher pays the read
        ({"channelId": "0x" + "ab" * 32}, False),
        ({"cumulativeAmount": str(99 * PRICE)}, False),
        ({"price": "0"}, False),
        ({"price": "1"}, False),
        ({"payer": STRANGER}, False),
    ],
)
def test_an_acceptance_of_another_voucher_pays_no_read(
    remote: Remote, change: dict[str, str], served: bool
) -> None:
    agent = channel_agent(remote)
    with httpx.Client(base_url=remote.server, auth=agent.auth) as http:
        assert http.get("/articles/note-130").status_code == 200  # opens the channel
    assert agent.channels is not None
    (record,) = agent.channels.channels()
    with httpx.Client(base_url=remote.facilitator) as http:
        statement = http.get(f"/channels/{record.channel_id}").json()
    liar = Liar()
    liar.answer = (200, _acceptance(agent, statement, **change), 0.0)
    response = _pay(remote, agent, liar, "note-131")
    if served:
        assert (response.status_code, response.json()["complete"]) == (200, True)
    else:
        assert response.status_code == 503, response.text
        assert response.json()["error"] == Reason.CHAIN_UNAVAILABLE
        assert "Retry-After" in response.headers
