"""The composition root (`agent_pay.assembly.root.assemble`): one assembly path for a server
settling in process or through a facilitator at a URL, and one handler for every error."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from agent_pay.assembly.root import assemble, assemble_facilitator
from agent_pay.boundary.error_responses import error_response
from agent_pay.chain.contract import Transactor
from agent_pay.chain.dev_roles import FACILITATOR_SERVICE_INDEX
from agent_pay.chain.devkeys import dev_signer
from agent_pay.errors import ChainUnavailableError, PaymentConflictError, Reason
from agent_pay.facilitator.http import HttpFacilitatorClient
from agent_pay.protocol import PaymentRequired, SettleResponse
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)
from agent_pay.server.faults import FaultPlan, FaultPoint
from agent_pay.server.ledger import Ledger, PaymentState
from agent_pay.serving import serve_app
from agent_pay.stack import FACILITATOR_INDEX
from agent_pay.testing import SyncASGITransport, TestAgent, Testbed

SLUG = "why-micropayments-failed"


@pytest.fixture(scope="module")
def bed() -> Testbed:
    return Testbed.create()


def gas_payer(bed: Testbed) -> Transactor:
    return Transactor(bed.chain, dev_signer(FACILITATOR_INDEX))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens there now: a connection is refused


def _pay(http: httpx.Client, agent: TestAgent) -> httpx.Response:
    first = http.get(f"/articles/{SLUG}")
    assert first.status_code == 402
    required = decode_header(first.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
    header = encode_header(agent.auth.sign(required.accepts[0], required))
    return http.get(f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: header})


def test_in_process_the_ledger_hears_of_each_settlement_before_it_is_broadcast(
    bed: Testbed,
) -> None:
    ledger = Ledger.in_memory()
    heard: list[tuple[str | None, bool]] = []

    def at_submission() -> None:  # the hook has recorded the hash; the node has not seen it
        [entry] = ledger.entries()
        sent = entry.tx_hash is not None and bed.chain.get_receipt(bytes.fromhex(entry.tx_hash[2:]))
        heard.append((entry.tx_hash, bool(sent)))

    parts = assemble(
        bed.chain,
        bed.tokens,
        gas_payer(bed),
        catalogue=bed.catalogue,
        ledger=ledger,
        faults=FaultPlan(FaultPoint.SUBMITTED, action=at_submission),
    )
    assert parts.server.ledger is ledger
    agent = bed.agent(funds={"USDX": "1"})
    with httpx.Client(transport=SyncASGITransport(parts.app), base_url="http://t") as http:
        paid = _pay(http, agent)
    assert paid.status_code == 200, paid.text
    settled = decode_header(paid.headers[PAYMENT_RESPONSE_HEADER], SettleResponse)
    assert heard == [(settled.transaction, False)]
    [entry] = ledger.entries()
    assert entry.state is PaymentState.DELIVERED


def test_behind_a_facilitator_at_a_url_a_paid_read_it_cannot_reach_is_503_and_charges_nothing(
    bed: Testbed,
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    parts = assemble(bed.chain, bed.tokens, url, catalogue=bed.catalogue)
    assert parts.exact is None
    assert isinstance(parts.facilitator, HttpFacilitatorClient)
    agent = bed.agent(funds={"USDX": "1"})
    before = bed.balance(agent.address)
    with httpx.Client(transport=SyncASGITransport(parts.app), base_url="http://t") as http:
        refused = _pay(http, agent)
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"] == Reason.CHAIN_UNAVAILABLE
    assert bed.balance(agent.address) == before
    assert [e.state for e in parts.server.ledger.entries()] in ([], [PaymentState.FAILED])


@pytest.mark.parametrize(
    ("schemes", "facilitator", "error", "message"),
    [
        # Channels behind a remote facilitator: their terms are read from it while assembling.
        (("exact", "channel"), "http://127.0.0.1:1", ChainUnavailableError, "unreachable"),
        (("exact", "lightning"), None, ValueError, "unknown scheme"),
    ],
)
def test_what_cannot_be_assembled_is_refused_before_anything_runs(
    bed: Testbed,
    schemes: tuple[str, ...],
    facilitator: str | None,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        assemble(
            bed.chain,
            bed.tokens,
            facilitator or gas_payer(bed),
            catalogue=bed.catalogue,
            schemes=schemes,
        )


def test_one_handler_answers_every_error_with_its_status() -> None:
    unavailable = error_response(ChainUnavailableError("node down", retry_after=7))
    assert unavailable.status_code == 503
    assert unavailable.headers["Retry-After"] == "7"
    conflict = error_response(PaymentConflictError("another payment has this id"))
    assert conflict.status_code == 409
    assert "Retry-After" not in conflict.headers
    assert json.loads(bytes(conflict.body)) == {
        "error": PaymentConflictError.default_reason,
        "message": "another payment has this id",
    }


def test_a_facilitator_also_says_whether_an_unfinished_settlement_was_broadcast() -> None:
    tx = "0x" + "ab" * 32
    trouble = ChainUnavailableError("receipt lost", broadcast=True, transaction=tx)
    assert json.loads(bytes(error_response(trouble, settlement_trouble=True).body)) == {
        "error": Reason.CHAIN_UNAVAILABLE,
        "message": "receipt lost",
        "broadcast": True,
        "transaction": tx,
    }
    # The content server answers its payer with the reason only.
    assert set(json.loads(bytes(error_response(trouble).body))) == {"error", "message"}


def test_the_facilitator_service_without_a_channel_contract_settles_exact_only(
    bed: Testbed,
) -> None:
    service = assemble_facilitator(
        bed.chain, bed.tokens, Transactor(bed.chain, dev_signer(FACILITATOR_SERVICE_INDEX))
    )
    assert service.channels is None
    with serve_app(service.app) as url:
        kinds = httpx.get(f"{url}/supported").json()["kinds"]
        assert [k["scheme"] for k in kinds] == ["exact"]
        assert httpx.post(f"{url}/channels/accept", json={}).status_code == 404
        malformed = httpx.post(f"{url}/verify", content=b"{")
    service.close()
    assert (malformed.status_code, malformed.json()["error"]) == (400, Reason.INVALID_HEADER)
