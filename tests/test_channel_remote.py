"""Channels behind a remote facilitator: the content server and the facilitator are two HTTP
services (uvicorn, each on a free port of this process), and the server reaches channels only
through `HttpChannelFacilitator`. A client opens a channel, pays many reads by voucher,
re-reads by key proof, and the payee claims; then the facilitator's channel endpoints are fed
hostile input.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_pay.assembly.channels import channel_server
from agent_pay.chain.contract import Transactor
from agent_pay.chain.dev_roles import FACILITATOR_SERVICE_INDEX
from agent_pay.chain.devkeys import dev_signer
from agent_pay.client.channels import ChannelPolicy
from agent_pay.errors import ChainUnavailableError, Reason
from agent_pay.facilitator.channel.endpoints import MAX_CHANNEL_BODY_BYTES
from agent_pay.facilitator.channel.remote import HttpChannelFacilitator
from agent_pay.facilitator.exact import ExactEvmScheme
from agent_pay.facilitator.http import HttpFacilitatorClient, create_facilitator_app
from agent_pay.facilitator.local import LocalFacilitator
from agent_pay.protocol import (
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    SettleResponse,
)
from agent_pay.protocol.channel import CHANNEL_EXTENSION
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)
from agent_pay.protocol.extensions import ENTITLEMENT_HEADER, RECEIPT_HEADER
from agent_pay.server.app import create_server
from agent_pay.server.offers import ExactOffers
from agent_pay.serving import serve_app
from agent_pay.signing.voucher import Voucher, sign_voucher, voucher_domain
from agent_pay.testing import TestAgent, Testbed
from tests._entitlement import challenge_for, proof_header
from tests.test_e2e_channel import AUTHOR, CATALOGUE, QUIET

PRICE = 100_000  # every article's, 0.1 USDX
READS = 12


@dataclass
class Remote:
    bed: Testbed  # the chain, and the facilitator's handlers (bed.app is not used)
    facilitator: str  # the facilitator service's URL
    server: str  # the content server's URL
    channels: HttpChannelFacilitator


@pytest.fixture(scope="module")
def remote() -> Iterator[Remote]:
    bed = Testbed.create(articles=CATALOGUE, schemes=("exact", "channel"), channel_options=QUIET)
    assert bed.channels is not None
    # The service's own "exact" handler, told of no ledger: the remote server keeps its own.
    exact = ExactEvmScheme(
        bed.tokens.values(), Transactor(bed.chain, dev_signer(FACILITATOR_SERVICE_INDEX))
    )
    service = create_facilitator_app(LocalFacilitator([exact, bed.channels]), channels=bed.channels)
    with serve_app(service) as facilitator_url:
        channels = HttpChannelFacilitator.connect(facilitator_url)
        facilitator = HttpFacilitatorClient(facilitator_url)
        offers, router = channel_server(bed.assets, channels, QUIET)
        app = create_server(
            bed.catalogue,
            bed.assets,
            facilitator,
            schemes=[ExactOffers(bed.assets), offers],
            routes=[router],
        ).app
        with serve_app(closing(app, channels, facilitator)) as server_url:
            yield Remote(bed, facilitator_url, server_url, channels)
    bed.close()


def closing(app: ASGIApp, *clients: HttpChannelFacilitator | HttpFacilitatorClient) -> ASGIApp:
    """`app`, closing `clients` (their connections live on its event loop) as it shuts down."""

    async def closing_app(scope: Scope, receive: Receive, send: Send) -> None:
        async def shutting_down() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                for client in clients:
                    await client.aclose()
            return message

        await app(scope, shutting_down if scope["type"] == "lifespan" else receive, send)

    return closing_app


def channel_agent(remote: Remote) -> TestAgent:
    policy = ChannelPolicy(min_expected_reads=1, deposit_reads=READS + 8)
    return remote.bed.agent(funds={"USDX": "5"}, tokens=["USDX"], channel_policy=policy)


def settlement(response: httpx.Response) -> SettleResponse:
    return decode_header(response.headers[PAYMENT_RESPONSE_HEADER], SettleResponse)


def test_the_server_learns_the_channel_terms_from_the_facilitator(remote: Remote) -> None:
    handler = remote.bed.channels
    assert handler is not None
    assert remote.channels.terms == handler.terms
    assert remote.channels.remote


def test_reads_by_voucher_re_reads_and_the_claim_through_a_remote_facilitator(
    remote: Remote,
) -> None:
    bed, agent = remote.bed, channel_agent(remote)
    handler = bed.channels
    assert handler is not None
    assert agent.channels is not None
    author_before = bed.balance(AUTHOR)
    slugs = [f"note-{i:03d}" for i in range(1, READS + 1)]
    with httpx.Client(base_url=remote.server, auth=agent.auth) as http:
        responses = [http.get(f"/articles/{slug}") for slug in slugs]
        assert [r.status_code for r in responses] == [200] * READS
        assert all(r.json()["complete"] for r in responses)
        opening, *vouchers = [settlement(r) for r in responses]
        assert opening.transaction != ""  # the deposit, through the facilitator's /settle
        blocks = bed.chain.block_number()
        assert all(s.transaction == "" and s.amount == PRICE for s in vouchers)
        last = vouchers[-1].extensions[CHANNEL_EXTENSION]  # type: ignore[index]
        assert (last["highest"], last["served"]) == (str(READS * PRICE), str(READS * PRICE))

        # Where the channel stands: the server asks the facilitator, which holds it.
        (record,) = agent.channels.channels()
        statement = http.get(f"/channels/{record.channel_id}").json()
        with httpx.Client(base_url=remote.facilitator) as service:
            assert service.get(f"/channels/{record.channel_id}").json() == statement
        assert statement["payer"] == agent.address

    # A re-read by key proof: the facilitator recorded the voucher's read.
    with httpx.Client(base_url=remote.server) as http:
        path = f"/articles/{slugs[3]}"
        header = proof_header(agent.signer, challenge_for(http, slugs[3]), path)
        again = http.get(path, headers={ENTITLEMENT_HEADER: header})
    assert again.status_code == 200
    assert again.json()["complete"]
    assert RECEIPT_HEADER in again.headers
    assert PAYMENT_RESPONSE_HEADER not in again.headers
    assert bed.chain.block_number() == blocks  # no voucher read made a transaction

    # The payee claims (the facilitator's settler): the author is paid every read.
    handler.settler.settle()
    assert bed.balance(AUTHOR) - author_before == READS * PRICE


def test_a_refused_voucher_is_a_402_with_the_channel_statement(remote: Remote) -> None:
    agent = channel_agent(remote)
    with httpx.Client(base_url=remote.server, auth=agent.auth) as http:
        assert http.get("/articles/note-020").status_code == 200  # opens the channel
        # The opening read's voucher, again, for another article: spent already.
        payment, offer = _voucher_payment(remote, agent, "note-021", cumulative=PRICE)
        response = http.get("/articles/note-021", headers=payment, auth=None)
    assert response.status_code == 402
    required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
    assert required.error == Reason.CHANNEL_VOUCHER_USED
    assert required.extensions is not None
    assert required.extensions[CHANNEL_EXTENSION]["info"]["served"] == str(PRICE)
    assert offer.scheme == "channel"


def test_a_facilitator_that_cannot_be_reached_is_a_503_not_a_charge(remote: Remote) -> None:
    gone = HttpChannelFacilitator("http://127.0.0.1:9", remote.channels.terms, timeout=2)
    offers, _ = channel_server(remote.bed.assets, gone, QUIET)
    app = create_server(
        remote.bed.catalogue,
        remote.bed.assets,
        HttpFacilitatorClient(remote.facilitator),
        schemes=[offers],
    ).app
    agent = channel_agent(remote)
    with httpx.Client(base_url=remote.server, auth=agent.auth) as http:
        assert http.get("/articles/note-030").status_code == 200  # opens the channel
    with serve_app(app) as url, httpx.Client(base_url=url) as http:
        payment, _ = _voucher_payment(remote, agent, "note-031", cumulative=2 * PRICE, base=url)
        response = http.get("/articles/note-031", headers=payment)
    assert response.status_code == 503
    assert response.json()["error"] == Reason.CHAIN_UNAVAILABLE
    with pytest.raises(ChainUnavailableError, match="unreachable"):
        HttpChannelFacilitator.connect("http://127.0.0.1:9", timeout=2)


# -- hostile input on the facilitator's channel endpoints ---------------------------------------


def _voucher_payment(
    remote: Remote, agent: TestAgent, slug: str, *, cumulative: int, base: str | None = None
) -> tuple[dict[str, str], PaymentRequirements]:
    """A `PAYMENT-SIGNATURE` header paying `slug` (at the server at `base`) with the voucher
    `cumulative` on `agent`'s channel, and the offer it accepts."""
    body = _accept_body(remote, agent, slug, cumulative=cumulative, base=base)
    payment = PaymentPayload.from_wire(body["paymentPayload"])
    return {PAYMENT_SIGNATURE_HEADER: encode_header(payment)}, payment.accepted


def _accept_body(
    remote: Remote, agent: TestAgent, slug: str, *, cumulative: int, base: str | None = None
) -> dict[str, Any]:
    """A `POST /channels/accept` body: `agent`'s voucher `cumulative` for one read of `slug`
    at the server at `base` (the remote one by default)."""
    assert agent.channels is not None
    base = base or remote.server
    with httpx.Client(base_url=base) as http:
        required = decode_header(
            http.get(f"/articles/{slug}").headers[PAYMENT_REQUIRED_HEADER], PaymentRequired
        )
    offer = next(o for o in required.accepts if o.scheme == "channel")
    (record,) = agent.channels.channels()
    terms = remote.channels.terms
    domain = voucher_domain(remote.bed.chain.chain_id, terms.channel_manager)
    channel = bytes.fromhex(record.channel_id[2:])
    signature = sign_voucher(agent.signer, domain, Voucher(channel, cumulative))
    url = f"{base}/articles/{slug}"
    payload = {
        "channelId": record.channel_id,
        "cumulativeAmount": str(cumulative),
        "signature": "0x" + signature.hex(),
    }
    return {
        "x402Version": 2,
        "paymentPayload": {
            "x402Version": 2,
            "resource": {"url": url},
            "accepted": offer.to_wire(),
            "payload": payload,
        },
        "paymentRequirements": offer.to_wire(),
        "resource": f"/articles/{slug}",
        "url": url,
    }


@pytest.fixture(scope="module")
def opened(remote: Remote) -> TestAgent:
    """An agent whose channel is open, with one read paid (cumulative PRICE)."""
    agent = channel_agent(remote)
    with httpx.Client(base_url=remote.server, auth=agent.auth) as http:
        assert http.get("/articles/note-040").status_code == 200
    return agent


def _post(remote: Remote, path: str, **kwargs: Any) -> httpx.Response:
    with httpx.Client(base_url=remote.facilitator) as http:
        return http.post(path, **kwargs)


@pytest.mark.parametrize("path", ["/channels/accept", "/channels/release", "/channels/paid-read"])
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", Reason.INVALID_HEADER),
        (b"[1, 2]", Reason.INVALID_HEADER),
        (b"{}", Reason.INVALID_PAYLOAD),
        (b'{"payer": 7, "resource": ["/articles/a"]}', Reason.INVALID_PAYLOAD),
        (b"[" * 6_000 + b"]" * 6_000, Reason.JSON_TOO_DEEP),  # under the size cap
    ],
)
def test_a_body_that_does_not_fit_is_a_400_with_its_reason(
    remote: Remote, path: str, content: bytes, reason: Reason
) -> None:
    response = _post(remote, path, content=content)
    assert (response.status_code, response.json()["error"]) == (400, reason)


@pytest.mark.parametrize("path", ["/channels/accept", "/channels/release", "/channels/paid-read"])
def test_an_oversized_body_is_a_413_before_it_is_read(remote: Remote, path: str) -> None:
    response = _post(remote, path, content=b"{" + b" " * MAX_CHANNEL_BODY_BYTES + b"}")
    assert (response.status_code, response.json()["error"]) == (413, Reason.REQUEST_TOO_LARGE)


def test_wrong_types_in_a_voucher_are_a_400(remote: Remote, opened: TestAgent) -> None:
    body = _accept_body(remote, opened, "note-041", cumulative=2 * PRICE)
    body["paymentPayload"]["payload"]["cumulativeAmount"] = 2 * PRICE  # a number, not a string
    response = _post(remote, "/channels/accept", json=body)
    assert (response.status_code, response.json()["error"]) == (400, Reason.INVALID_PAYLOAD)
    body = _accept_body(remote, opened, "note-041", cumulative=2 * PRICE)
    body["resource"] = 42
    response = _post(remote, "/channels/accept", json=body)
    assert (response.status_code, response.json()["error"]) == (400, Reason.INVALID_PAYLOAD)


def test_a_voucher_on_an_unknown_channel_needs_the_chain(remote: Remote, opened: TestAgent) -> None:
    body = _accept_body(remote, opened, "note-041", cumulative=2 * PRICE)
    body["paymentPayload"]["payload"]["channelId"] = "0x" + "ab" * 32
    response = _post(remote, "/channels/accept", json=body)
    assert (response.status_code, response.json()) == (200, {})  # verify and settle it
    with httpx.Client(base_url=remote.facilitator) as http:
        unknown = http.get("/channels/0x" + "ab" * 32)
        garbage = http.get("/channels/not-hex")
    assert (unknown.status_code, unknown.json()["error"]) == (404, Reason.CHANNEL_UNKNOWN)
    assert (garbage.status_code, garbage.json()["error"]) == (404, Reason.CHANNEL_UNKNOWN)


def test_a_replayed_or_lower_voucher_is_refused_with_its_reason(
    remote: Remote, opened: TestAgent
) -> None:
    body = _accept_body(remote, opened, "note-042", cumulative=2 * PRICE)
    first = _post(remote, "/channels/accept", json=body).json()
    assert first["acceptance"]["price"] == str(PRICE)
    again = _post(remote, "/channels/accept", json=body).json()  # the same read, retried
    assert again["acceptance"]["replayed"] is True
    other = _accept_body(remote, opened, "note-043", cumulative=2 * PRICE)  # another read
    replayed = _post(remote, "/channels/accept", json=other)
    assert replayed.status_code == 200
    refusal = replayed.json()["refusal"]
    assert refusal["reason"] == Reason.CHANNEL_VOUCHER_USED
    assert refusal["statement"]["highest"] == str(2 * PRICE)
    lower = _accept_body(remote, opened, "note-043", cumulative=PRICE // 2)
    refusal = _post(remote, "/channels/accept", json=lower).json()["refusal"]
    assert refusal["reason"] == Reason.CHANNEL_AMOUNT_NOT_INCREASING


def test_a_release_needs_the_token_the_facilitator_gave(remote: Remote, opened: TestAgent) -> None:
    body = _accept_body(remote, opened, "note-044", cumulative=3 * PRICE)
    accepted = _post(remote, "/channels/accept", json=body).json()["acceptance"]
    release = {
        "channelId": accepted["channelId"],
        "cumulativeAmount": accepted["cumulativeAmount"],
        "price": accepted["price"],
        "releaseToken": "00" * 32,
    }
    forged = _post(remote, "/channels/release", json=release)
    assert (forged.status_code, forged.json()["error"]) == (400, Reason.CHANNEL_RELEASE_INVALID)
    cheaper = {**release, "releaseToken": accepted["releaseToken"], "price": "1"}
    forged = _post(remote, "/channels/release", json=cheaper)
    assert (forged.status_code, forged.json()["error"]) == (400, Reason.CHANNEL_RELEASE_INVALID)
    released = _post(remote, "/channels/release", json={**release, **_token(accepted)})
    assert (released.status_code, released.json()) == (200, {})
    # The read is unpaid again: the same voucher pays for it once more (not as a replay).
    again = _post(remote, "/channels/accept", json=body).json()["acceptance"]
    assert again["replayed"] is False


def _token(accepted: dict[str, Any]) -> dict[str, str]:
    return {"releaseToken": accepted["releaseToken"]}


def test_a_paid_read_is_found_for_its_payer_only(remote: Remote, opened: TestAgent) -> None:
    found = _post(
        remote,
        "/channels/paid-read",
        json={"payer": opened.address, "resource": "/articles/note-040"},
    ).json()
    assert found["paidRead"]["price"] == str(PRICE)
    stranger = "0x" + "cd" * 20
    none = _post(
        remote, "/channels/paid-read", json={"payer": stranger, "resource": "/articles/note-040"}
    )
    assert (none.status_code, none.json()) == (200, {})


@pytest.mark.slow
def test_the_servers_channel_side_loads_no_chain_and_no_channel_handler() -> None:
    code = (
        "import sys, agent_pay.server.app, agent_pay.server.channel_offers, "
        "agent_pay.facilitator.channel.remote; "
        "print(sorted(m for m in sys.modules if m.startswith(('agent_pay.chain', "
        "'agent_pay.facilitator.channel.'))))"
    )
    loaded = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert (
        loaded.strip() == "['agent_pay.facilitator.channel.records', "
        "'agent_pay.facilitator.channel.remote']"
    )


def test_a_voucher_for_requirements_it_did_not_accept_is_refused(
    remote: Remote, opened: TestAgent
) -> None:
    body = _accept_body(remote, opened, "note-045", cumulative=4 * PRICE)
    body["paymentRequirements"]["amount"] = "1"  # a cheaper read than the payer accepted
    refusal = _post(remote, "/channels/accept", json=body).json()["refusal"]
    assert refusal["reason"] == Reason.REQUIREMENTS_MISMATCH
    body = _accept_body(remote, opened, "note-045", cumulative=4 * PRICE)
    for requirements in (body["paymentRequirements"], body["paymentPayload"]["accepted"]):
        requirements["extra"]["channelManager"] = "0x" + "ee" * 20  # another contract
    refusal = _post(remote, "/channels/accept", json=body).json()["refusal"]
    assert refusal["reason"] == Reason.REQUIREMENTS_MISMATCH


def test_the_http_seam_accepts_releases_and_describes(remote: Remote, opened: TestAgent) -> None:
    body = _accept_body(remote, opened, "note-046", cumulative=5 * PRICE)
    payment = PaymentPayload.from_wire(body["paymentPayload"])
    path = "/articles/note-046"

    async def run() -> None:
        seam = HttpChannelFacilitator(remote.facilitator, remote.channels.terms)
        try:
            first = await seam.accept(payment, payment.accepted, path)
            assert first is not None
            assert (first.replayed, first.price, first.payer) == (False, PRICE, opened.address)
            assert seam.known_payer(first.channel_id) == opened.address
            await seam.release(first)  # the read could not be served
            again = await seam.accept(payment, payment.accepted, path)
            assert again is not None
            assert not again.replayed  # paid anew: the release gave its slice back
            assert await seam.paid_read(opened.address, path) is not None
            statement = await seam.statement(first.channel_id)
            assert statement is not None
            assert statement["highest"] == str(5 * PRICE)
            assert await seam.statement(b"\x00" * 32) is None
        finally:
            await seam.aclose()

    asyncio.run(run())
