"""Chain trouble: a node that is down, slow or reverting gives 503 with Retry-After — never a
500, never free content, never a lost payment — and the service recovers when it comes back.

The chain is the real embedded one behind `FlakyChain`, a switchable wrapper (the one fake in
this suite: node failures cannot be produced on demand any other way in one process). A real
node that is stopped and restarted is in tests/test_fault_injection.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest

from agent_pay.chain.base import ChainError, ContractRevertError, Log, Receipt
from agent_pay.chain.embedded import EmbeddedChain
from agent_pay.client.reader import Reader
from agent_pay.errors import Reason
from agent_pay.facilitator.exact import VALIDITY_MARGIN
from agent_pay.facilitator.http import HttpFacilitatorClient, create_facilitator_app
from agent_pay.protocol import PaymentRequired
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)
from agent_pay.server.app import create_server
from agent_pay.server.catalogue import Article
from agent_pay.server.checkout import RECONCILE_INTERVAL
from agent_pay.server.ledger import Ledger, PaymentState
from agent_pay.testing import SyncASGITransport, TestAgent, Testbed
from tests._money import assert_ledger_matches_chain, books, delta
from tests.test_e2e_exact import authorize

SLUG = "why-micropayments-failed"
PRICE = 100_000
BASE = "http://testserver"


class NodeDown(ChainError):
    """What the JSON-RPC backend raises when the node cannot be reached."""


class FlakyChain:
    """An `EmbeddedChain` behind a switch: "up", "down" (every call fails), "slow" (sending
    works, but no receipt arrives in time), "reverting" (every read reverts), "garbage" (every
    read raises something no chain layer should)."""

    def __init__(self) -> None:
        self.inner = EmbeddedChain()
        self.mode = "up"

    def _gate(self) -> None:
        if self.mode == "down":
            raise NodeDown("connection refused")

    @property
    def chain_id(self) -> int:
        return self.inner.chain_id

    def __getattr__(self, name: str) -> Any:
        # Reads that settlement does not use pass through (block_number, get_code, ...).
        target = getattr(self.inner, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self._gate()
            return target(*args, **kwargs)

        return call

    def next_timestamp(self) -> int:
        self._gate()
        return self.inner.next_timestamp()

    def expecting(self) -> AbstractContextManager[None]:
        return self.inner.expecting()  # in process: no node to be down

    def call(self, to: str, data: bytes, sender: str | None = None) -> bytes:
        self._gate()
        if self.mode == "reverting":
            raise ContractRevertError("execution reverted")
        if self.mode == "garbage":
            raise KeyError("result")
        return self.inner.call(to, data, sender)

    def get_storage_at(self, address: str, slot: int) -> int:
        self._gate()
        if self.mode == "reverting":
            raise ContractRevertError("execution reverted")
        if self.mode == "garbage":
            raise KeyError("result")
        return self.inner.get_storage_at(address, slot)

    def send_raw_transaction(self, raw: bytes) -> bytes:
        self._gate()
        return self.inner.send_raw_transaction(raw)

    def wait_for_receipt(self, tx_hash: bytes, timeout: float = 30.0) -> Receipt:
        self._gate()
        if self.mode == "slow":
            raise TimeoutError(f"no receipt after {timeout} s")
        return self.inner.wait_for_receipt(tx_hash, timeout)

    def get_receipt(self, tx_hash: bytes) -> Receipt | None:
        self._gate()
        return self.inner.get_receipt(tx_hash)

    def get_logs(
        self,
        address: str,
        topics: Sequence[bytes | None] = (),
        from_block: int = 0,
        to_block: int | None = None,
    ) -> list[Log]:
        self._gate()
        return self.inner.get_logs(address, topics, from_block, to_block)


class OnRender:
    """Renders articles, running `action` (once) while the content is being produced: the
    moment between verification and settlement."""

    def __init__(self) -> None:
        self.action: Callable[[], None] | None = None

    def __call__(self, article: Article) -> str:
        action, self.action = self.action, None
        if action is not None:
            action()
        return article.body


@pytest.fixture
def chain() -> FlakyChain:
    return FlakyChain()


@pytest.fixture
def render() -> OnRender:
    return OnRender()


@pytest.fixture
def bed(chain: FlakyChain, render: OnRender) -> Testbed:
    bed = Testbed.create(chain=chain, render=render)  # type: ignore[arg-type]
    bed.server.checkout.reconcile_interval = 0.0
    return bed


def header_for(client: httpx.Client, agent: TestAgent) -> str:
    response = client.get(f"/articles/{SLUG}")
    required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
    return encode_header(agent.auth.sign(required.accepts[0], required))


def paid_read(client: httpx.Client, header: str) -> httpx.Response:
    return client.get(f"/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: header})


def assert_unavailable(bed: Testbed, response: httpx.Response, reason: str) -> None:
    article = bed.catalogue.get(SLUG)
    assert article is not None
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"] == reason
    assert set(response.json()) == {"error", "message"}  # no content, not even the preview
    assert PAYMENT_RESPONSE_HEADER not in response.headers


def everyone(bed: Testbed, agent: TestAgent) -> list[str]:
    return [agent.address, *sorted({a.author for a in bed.catalogue})]


def one_debit(bed: Testbed, agent: TestAgent) -> dict[tuple[str, str], int]:
    article = bed.catalogue.get(SLUG)
    assert article is not None
    return {(agent.address, "USDX"): -PRICE, (article.author, "USDX"): PRICE}


@pytest.mark.parametrize("mode", ["down", "reverting", "garbage"])
def test_a_node_in_trouble_at_verification_is_503_and_nothing_is_recorded(
    bed: Testbed, chain: FlakyChain, mode: str
) -> None:
    agent = bed.agent(funds={"USDX": "1"})
    before = books(bed.tokens, everyone(bed, agent))
    with bed.client() as client:
        header = header_for(client, agent)
        chain.mode = mode
        assert_unavailable(bed, paid_read(client, header), Reason.CHAIN_UNAVAILABLE)
        assert bed.ledger.entries() == []
        chain.mode = "up"
        assert paid_read(client, header).status_code == 200
    assert delta(before, books(bed.tokens, everyone(bed, agent))) == one_debit(bed, agent)
    assert_ledger_matches_chain(bed.ledger, bed.chain, bed.tokens)


@pytest.mark.parametrize("mode", ["down", "slow"])
def test_a_node_lost_during_settlement_keeps_the_payment_and_the_retry_delivers_once(
    bed: Testbed, chain: FlakyChain, render: OnRender, mode: str
) -> None:
    agent = bed.agent(funds={"USDX": "1"})
    before = books(bed.tokens, everyone(bed, agent))
    with bed.client() as client:
        header = header_for(client, agent)
        render.action = lambda: setattr(chain, "mode", mode)
        assert_unavailable(bed, paid_read(client, header), Reason.CHAIN_UNAVAILABLE)
        [entry] = bed.ledger.entries()
        if mode == "slow":
            # Sent: the ledger heard the hash before the broadcast; kept, nothing assumed.
            assert entry.state is PaymentState.SETTLING
            assert entry.tx_hash is not None
        else:
            # Never sent: failed before the 503 went out, so nothing can charge it later.
            assert entry.state is PaymentState.FAILED
            assert entry.tx_hash is None
            assert entry.error_reason == "settlement_not_sent"
        # While the node is in trouble, retries keep answering 503 and charge nothing new.
        assert_unavailable(bed, paid_read(client, header), Reason.CHAIN_UNAVAILABLE)
        chain.mode = "up"
        response = paid_read(client, header)
    assert response.status_code == 200
    assert delta(before, books(bed.tokens, everyone(bed, agent))) == one_debit(bed, agent)
    counts = assert_ledger_matches_chain(bed.ledger, bed.chain, bed.tokens)
    assert counts[PaymentState.DELIVERED] == 1


@pytest.mark.parametrize("mode", ["down", "slow"])
def test_a_stranded_payment_is_charged_only_if_it_was_sent_before_the_503(
    bed: Testbed, chain: FlakyChain, render: OnRender, mode: str
) -> None:
    """Nobody retries. The 503 went out with the settlement unsent ("down") or sent and not
    yet mined ("slow"). When the node is back, the next requests reconcile in the background:
    the unsent one is never charged; the sent one is mined and recorded, not sent again."""
    stranded = bed.agent(funds={"USDX": "1"})
    later = bed.agent(funds={"USDX": "1"})
    before = books(bed.tokens, [stranded.address])
    with bed.client() as client:
        header = header_for(client, stranded)
        render.action = lambda: setattr(chain, "mode", mode)
        assert paid_read(client, header).status_code == 503
        chain.mode = "up"
        if mode == "slow":
            bed.chain.mine()  # the node mines what it was sent
        assert client.get(f"/articles/{SLUG}", auth=later.auth).status_code == 200
        deadline = time.monotonic() + 5
        while bed.ledger.in_flight() and time.monotonic() < deadline:
            client.get("/articles")
            time.sleep(0.02)
    states = {e.key.payer: e.state for e in bed.ledger.entries()}
    assert states[later.address] is PaymentState.DELIVERED
    assert_ledger_matches_chain(bed.ledger, bed.chain, bed.tokens)
    paid = delta(before, books(bed.tokens, [stranded.address]))
    if mode == "down":
        assert states[stranded.address] is PaymentState.FAILED
        assert paid == {}
    else:
        assert states[stranded.address] is PaymentState.SETTLED  # its retry will deliver
        assert paid == {(stranded.address, "USDX"): -PRICE}


def test_behind_a_remote_facilitator_the_ledger_holds_what_may_still_be_mined(
    bed: Testbed, chain: FlakyChain, render: OnRender
) -> None:
    """A server settling through agent-pay's facilitator over HTTP, whose settlement is sent but
    not mined when the node goes: the facilitator's 503 says which transaction may still be
    mined, and the server's ledger holds it before its own 503 goes out, as it does for a
    settlement made in process. Nobody retries; reconciliation finds it mined."""
    facilitator = create_facilitator_app(bed.facilitator)
    remote = HttpFacilitatorClient(
        "http://facilitator.test", transport=httpx.ASGITransport(app=facilitator)
    )
    ledger = Ledger.in_memory()
    server = create_server(bed.catalogue, bed.assets, remote, render=render, ledger=ledger)
    server.checkout.reconcile_interval = 0.0
    app = server.app
    stranded = bed.agent(funds={"USDX": "1"})
    later = bed.agent(funds={"USDX": "1"})
    before = books(bed.tokens, [stranded.address])
    with httpx.Client(transport=SyncASGITransport(app), base_url=BASE) as client:
        header = header_for(client, stranded)
        render.action = lambda: setattr(chain, "mode", "slow")
        assert paid_read(client, header).status_code == 503
        [entry] = ledger.entries()
        assert entry.state is PaymentState.SETTLING
        assert entry.tx_hash is not None  # before the 503 went out
        chain.mode = "up"
        bed.chain.mine()  # the node mines what it was sent
        assert client.get(f"/articles/{SLUG}", auth=later.auth).status_code == 200
        deadline = time.monotonic() + 5
        while ledger.in_flight() and time.monotonic() < deadline:
            client.get(f"/articles/{SLUG}")
            time.sleep(0.02)
    assert_ledger_matches_chain(ledger, bed.chain, bed.tokens)
    final = {e.key.payer: e for e in ledger.entries()}[stranded.address]
    assert final.state is PaymentState.SETTLED
    assert final.tx_hash == entry.tx_hash  # the very transaction recorded before the 503
    assert delta(before, books(bed.tokens, [stranded.address])) == {
        (stranded.address, "USDX"): -PRICE
    }


def test_a_broken_ledger_is_503_and_charges_nothing(bed: Testbed) -> None:
    agent = bed.agent(funds={"USDX": "1"})
    before = books(bed.tokens, everyone(bed, agent))
    with bed.client() as client:
        header = header_for(client, agent)
        bed.ledger.close()  # the disk went away
        assert_unavailable(bed, paid_read(client, header), Reason.LEDGER_UNAVAILABLE)
    assert delta(before, books(bed.tokens, everyone(bed, agent))) == {}


def test_the_reader_retries_by_itself_and_pays_once(
    bed: Testbed, chain: FlakyChain, render: OnRender
) -> None:
    """The node drops out mid-settlement: the Reader waits out the Retry-After (here: the node
    comes back while it waits) and retries; the auth resends the same payment."""
    agent = bed.agent(funds={"USDX": "1"})
    before = books(bed.tokens, everyone(bed, agent))
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        chain.mode = "up"

    render.action = lambda: setattr(chain, "mode", "down")
    with Reader(BASE, agent.auth, transport=SyncASGITransport(bed.app), sleep=wait) as reader:
        page = reader.buy(SLUG)
    assert page.complete
    assert waits == [2.0]  # the server's Retry-After
    assert len(agent.auth.payments) == 1
    assert delta(before, books(bed.tokens, everyone(bed, agent))) == one_debit(bed, agent)


@pytest.mark.parametrize("mode", ["down", pytest.param("slow", marks=pytest.mark.slow)])
def test_behind_a_remote_facilitator_an_unsent_settlement_is_failed_at_once(
    bed: Testbed, chain: FlakyChain, render: OnRender, mode: str
) -> None:
    """The server settles through our facilitator over HTTP, so it hears no hash before the
    broadcast. The facilitator's 503 says whether the transaction was sent: unsent ("down"),
    the entry is failed before the 503 goes out, and nothing can charge it later; sent and not
    mined ("slow"), it stays settling, and is charged only when the chain has it."""
    remote = HttpFacilitatorClient(
        "http://facilitator.test",
        transport=httpx.ASGITransport(app=create_facilitator_app(bed.facilitator)),
    )
    ledger = Ledger.in_memory()
    app = create_server(bed.catalogue, bed.assets, remote, ledger=ledger, render=render).app
    payer = bed.agent(funds={"USDX": "1"})
    before = books(bed.tokens, [payer.address])
    with httpx.Client(transport=SyncASGITransport(app), base_url="http://testserver") as client:
        header = header_for(client, payer)
        render.action = lambda: setattr(chain, "mode", mode)
        assert_unavailable(bed, paid_read(client, header), Reason.CHAIN_UNAVAILABLE)
        [entry] = ledger.entries()
        chain.mode = "up"
        if mode == "down":
            assert entry.state is PaymentState.FAILED
            assert entry.error_reason == "settlement_not_sent"
        else:
            assert entry.state is PaymentState.SETTLING
            bed.chain.mine()
        # The next pass starts RECONCILE_INTERVAL after the 503, and then needs a moment: a
        # deadline of exactly the interval (as it was) failed here every time.
        deadline = time.monotonic() + RECONCILE_INTERVAL + 10
        while ledger.in_flight() and time.monotonic() < deadline:
            client.get(f"/articles/{SLUG}")  # each request may start a reconciliation pass
            time.sleep(0.05)
    paid = delta(before, books(bed.tokens, [payer.address]))
    assert paid == ({} if mode == "down" else {(payer.address, "USDX"): -PRICE})
    [entry] = ledger.entries()
    assert entry.state is (PaymentState.FAILED if mode == "down" else PaymentState.SETTLED)


@pytest.mark.slow
def test_a_sent_settlement_in_its_last_seconds_is_not_failed_while_it_may_be_mined(
    bed: Testbed, chain: FlakyChain, render: OnRender
) -> None:
    """Verification calls an authorization expired `VALIDITY_MARGIN` seconds early (settling
    needs a block), but the token takes it until `validBefore`. A settlement sent, not yet
    mined, and now inside that margin must stay `settling`: failing it would record as unpaid
    a transfer the next block may still make."""
    payer = bed.agent(funds={"USDX": "1"})
    with bed.client() as client:
        required = decode_header(
            client.get(f"/articles/{SLUG}").headers[PAYMENT_REQUIRED_HEADER], PaymentRequired
        )
        valid_before = bed.chain.next_timestamp() + VALIDITY_MARGIN + 2
        payment = authorize(payer.signer, required.accepts[0], required, valid_before=valid_before)
        render.action = lambda: setattr(chain, "mode", "slow")
        assert paid_read(client, encode_header(payment)).status_code == 503
    chain.mode = "up"
    time.sleep(2.5)  # inside the margin now: verification says "expired"
    checkout = bed.server.checkout
    report = asyncio.run(checkout.reconcile())
    assert report.unresolved == 1
    [entry] = bed.ledger.entries()
    assert entry.state is PaymentState.SETTLING
    bed.chain.mine()  # the transfer the failed entry would have hidden
    assert bed.balance(payer.address) == 1_000_000 - PRICE
    assert asyncio.run(checkout.reconcile()).failed == 0
