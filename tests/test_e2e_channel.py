"""The channel scheme end to end: the real app, the embedded chain, agents paying through
`PaymentAuth`. A 402 offers "exact" and "channel" side by side; an agent opens a channel on its
first read and pays every later read with one voucher and no transaction; every bad voucher is
refused with its reason, no content and no money moved; the settler's batches and the payer's
close add up to the atomic unit; a restarted agent resumes where the server stands; and 1,000
reads per channel cost under 1% of the "exact" scheme's gas per read.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_pay.assembly.channels import ChannelOptions
from agent_pay.assembly.root import assemble
from agent_pay.chain.channel import ChannelStatus
from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.embedded import EmbeddedChain
from agent_pay.cli.channels import describe, request_close, withdraw
from agent_pay.client.auth import PaymentAuth
from agent_pay.client.channel_store import ClientChannelStore
from agent_pay.client.channels import ChannelClientScheme, ChannelPolicy
from agent_pay.client.policy import SpendingPolicy
from agent_pay.client.receipts import ReceiptStore
from agent_pay.errors import Reason
from agent_pay.protocol import (
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    ResourceInfo,
    SettleResponse,
)
from agent_pay.protocol.channel import CHANNEL_EXTENSION, ChannelStatement
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)
from agent_pay.protocol.extensions import (
    ENTITLEMENT_HEADER,
    NO_TRANSACTION,
    RECEIPT_EXTENSION,
    RECEIPT_HEADER,
    EntitlementChallenge,
    SignedReceipt,
)
from agent_pay.receipts import load_receipt, verify_receipt
from agent_pay.server.catalogue import Article, Catalogue
from agent_pay.server.ledger import Ledger
from agent_pay.signing import LocalSigner
from agent_pay.signing.voucher import Voucher, sign_voucher, voucher_domain
from agent_pay.stack import FACILITATOR_INDEX
from agent_pay.testing import TestAgent, Testbed
from tests._entitlement import challenge_for, proof_header

GRACE = 600
PRICE = 100_000  # 0.1 USDX
AUTHOR = "0x" + "a1" * 20
OTHER_AUTHOR = "0x" + "b2" * 20
_BODY = "\n\n".join(
    f"Paragraph {i}: agents pay per read, one voucher at a time, settled later." for i in range(9)
)
CATALOGUE = Catalogue(
    [
        Article(
            slug=f"note-{i:03d}",
            title=f"Note {i}",
            author=AUTHOR,
            body=_BODY,
            prices={"USDX": Decimal("0.1")},
        )
        for i in range(160)
    ]
    + [
        Article(
            slug=f"other-{i:02d}",
            title=f"Other {i}",
            author=OTHER_AUTHOR,
            body=_BODY,
            prices={"USDX": Decimal("0.1")},
        )
        for i in range(10)
    ]
)
C1 = "note-000"  # read by every test that needs one article; never its first purchase
OTHER = "other-00"
QUIET = ChannelOptions(  # the tests poll the chain and settle by hand
    grace_period=GRACE,
    refresh_interval=3600,
    settle_every_seconds=3600,
    settle_every_vouchers=10**9,
)


class ShiftedClock:
    """Wall time plus a shift the test moves forward (to get past a grace period)."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift


@dataclass
class Bed:
    bed: Testbed
    clock: ShiftedClock
    slugs: Iterator[str]

    def fresh(self) -> str:
        """An article by AUTHOR nobody has bought on this bed yet."""
        return next(self.slugs)


def _bed() -> Bed:
    clock = ShiftedClock()
    bed = Testbed.create(
        articles=CATALOGUE,
        chain=EmbeddedChain(clock=clock),
        schemes=("exact", "channel"),
        channel_options=QUIET,
    )
    return Bed(bed, clock, iter([f"note-{i:03d}" for i in range(1, 160)]))


@pytest.fixture(scope="module")
def env() -> Iterator[Bed]:
    bed = _bed()
    yield bed
    bed.bed.close()


def channel_agent(
    env: Bed, *, usdx: str = "5", receipts: ReceiptStore | None = None, **policy: Any
) -> TestAgent:
    policy.setdefault("min_expected_reads", 1)
    policy.setdefault("deposit_reads", 20)
    return env.bed.agent(
        funds={"USDX": usdx},
        tokens=["USDX"],
        receipts=receipts,
        channel_policy=ChannelPolicy(**policy),
    )


def advance(env: Bed, seconds: float) -> None:
    """Move the chain's clock on, and mine a block so that calls see the new time."""
    env.clock.shift += seconds
    chain = env.bed.chain
    assert isinstance(chain, EmbeddedChain)
    chain.mine(allow_empty=True)


def give_gas(env: Bed, address: str) -> None:
    bank = Transactor(env.bed.chain, dev_signer(7))
    assert bank.transact(address, b"", gas=21_000, value=10**17).status


def offer_for(env: Bed, slug: str, scheme: str = "channel") -> tuple[PaymentRequirements, Any]:
    with env.bed.client() as http:
        response = http.get(f"/articles/{slug}")
    challenge = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
    usdx = env.bed.tokens["USDX"].address
    offer = next(o for o in challenge.accepts if o.scheme == scheme and o.asset == usdx)
    return offer, challenge


def statement_of(env: Bed, agent: TestAgent) -> dict[str, Any]:
    assert agent.channels is not None
    (record,) = [r for r in agent.channels.channels() if r.status != "failed"]
    handler = env.bed.channels
    assert handler is not None
    statement = handler.statement(bytes.fromhex(record.channel_id[2:]))
    assert statement is not None
    return statement


def read(env: Bed, agent: TestAgent, slug: str) -> httpx.Response:
    with env.bed.client(agent) as http:
        return http.get(f"/articles/{slug}")


def pay_raw(
    env: Bed,
    slug: str,
    offer: PaymentRequirements,
    payload: dict[str, Any],
    *,
    resource: str | None = "same",
) -> httpx.Response:
    url = f"http://testserver/articles/{slug}"
    info = ResourceInfo(url=url) if resource == "same" else None
    payment = PaymentPayload(x402_version=2, resource=info, accepted=offer, payload=payload)
    with env.bed.client() as http:
        return http.get(url, headers={PAYMENT_SIGNATURE_HEADER: encode_header(payment)})


def voucher(
    env: Bed, signer: LocalSigner, channel: str, cumulative: int, **domain: Any
) -> dict[str, Any]:
    handler = env.bed.channels
    assert handler is not None
    chain_id = domain.get("chain_id", env.bed.chain.chain_id)
    manager = domain.get("manager", handler.manager.address)
    signature = sign_voucher(
        signer, voucher_domain(chain_id, manager), Voucher(bytes.fromhex(channel[2:]), cumulative)
    )
    return {
        "channelId": channel,
        "cumulativeAmount": str(cumulative),
        "signature": "0x" + signature.hex(),
    }


# -- offers and the happy path ---------------------------------------------------------------


def test_a_402_offers_exact_and_channel_side_by_side(env: Bed) -> None:
    offer, challenge = offer_for(env, C1)
    exact, _ = offer_for(env, C1, "exact")
    assert [o.scheme for o in challenge.accepts] == ["exact", "channel"]
    assert (offer.amount, offer.pay_to, offer.asset) == (exact.amount, exact.pay_to, exact.asset)
    handler = env.bed.channels
    assert handler is not None
    assert offer.extra == {
        "name": exact.extra["name"],
        "version": exact.extra["version"],
        "channelManager": handler.manager.address,
        "minDeposit": str(10 * PRICE),
        "gracePeriod": GRACE,
        "voucherDomain": {"name": "agent-pay Channel", "version": "1"},
    }


def test_first_read_opens_a_channel_and_later_reads_need_no_transaction(env: Bed) -> None:
    agent = channel_agent(env)
    payer_before = env.bed.balance(agent.address)

    first = read(env, agent, env.fresh())
    assert first.json()["complete"]
    opening = decode_header(first.headers[PAYMENT_RESPONSE_HEADER], SettleResponse)
    assert opening.transaction != ""  # the deposit
    assert env.bed.balance(agent.address) == payer_before - 20 * PRICE

    block = env.bed.chain.block_number()
    for _ in range(4):
        response = read(env, agent, env.fresh())
        assert response.json()["complete"]
        settled = decode_header(response.headers[PAYMENT_RESPONSE_HEADER], SettleResponse)
        assert (settled.transaction, settled.amount) == ("", PRICE)
        statement = ChannelStatement.from_wire(settled.extensions[CHANNEL_EXTENSION])
    assert env.bed.chain.block_number() == block  # five reads, no transaction
    assert (statement.served, statement.highest) == (5 * PRICE, 5 * PRICE)
    assert agent.spending.spent(env.bed.tokens["USDX"].asset) == 5 * PRICE


def test_the_policy_pays_exact_until_several_reads_are_expected(env: Bed) -> None:
    agent = channel_agent(env, min_expected_reads=3)
    for expected_scheme in ("exact", "exact", "channel", "channel"):
        response = read(env, agent, env.fresh())
        assert response.json()["complete"]
        assert agent.auth.payments[-1].offer.scheme == expected_scheme
    planned = channel_agent(env, min_expected_reads=3)
    assert planned.channels is not None
    planned.channels.expect(OTHER_AUTHOR, 10)
    read(env, planned, OTHER)
    assert planned.auth.payments[-1].offer.scheme == "channel"


def test_concurrent_reads_on_one_channel_are_all_served_once(env: Bed) -> None:
    agent = channel_agent(env, deposit_reads=40)
    assert read(env, agent, env.fresh()).json()["complete"]
    slugs = [env.fresh() for _ in range(24)]

    async def many() -> list[httpx.Response]:
        async with env.bed.async_client(agent) as http:
            return await asyncio.gather(*(http.get(f"/articles/{slug}") for slug in slugs))

    responses = asyncio.run(many())
    assert all(r.json()["complete"] for r in responses)
    statement = statement_of(env, agent)
    assert (statement["served"], statement["highest"]) == (str(25 * PRICE), str(25 * PRICE))
    assert "unpaid" not in statement


def test_concurrent_first_reads_share_one_deposit(env: Bed) -> None:
    agent = channel_agent(env, deposit_reads=40)
    slugs = [env.fresh() for _ in range(6)]
    block = env.bed.chain.block_number()

    async def many() -> list[httpx.Response]:
        async with env.bed.async_client(agent) as http:
            return await asyncio.gather(*(http.get(f"/articles/{slug}") for slug in slugs))

    responses = asyncio.run(many())
    assert all(r.json()["complete"] for r in responses)
    opens = {
        decode_header(r.headers[PAYMENT_RESPONSE_HEADER], SettleResponse).transaction
        for r in responses
    } - {""}
    assert len(opens) == 1  # one deposit transaction, whoever carried it
    # Reads that waited for the deposit went through the ledger: their receipts (which name
    # no transaction) are kept like the opener's. Reads paid by voucher came without one, and
    # are kept as purchases: every article is re-read by key proof.
    signed = [
        p for p in agent.auth.payments if RECEIPT_EXTENSION in (p.settlement.extensions or {})
    ]
    assert all(p.receipt is not None for p in signed)
    urls = [f"http://testserver/articles/{slug}" for slug in slugs]
    assert all(agent.auth.receipts.bought(url, agent.address) for url in urls)
    assert env.bed.chain.block_number() == block + 1
    assert statement_of(env, agent)["served"] == str(6 * PRICE)


# -- bad input: a reason, no content, no money -----------------------------------------------


@pytest.fixture(scope="module")
def opened(env: Bed) -> tuple[TestAgent, str]:
    """An agent with an open channel to C1's author (deposit 20 reads) and two reads paid."""
    agent = channel_agent(env)
    for _ in range(2):
        assert read(env, agent, env.fresh()).json()["complete"]
    assert agent.channels is not None
    return agent, agent.channels.channels()[0].channel_id


def _refused(env: Bed, response: httpx.Response, reason: str, agent: TestAgent, before: Any) -> Any:
    body = response.json()
    assert response.status_code == 402, body
    assert (body["error"], body["complete"]) == (reason, False)
    slug = response.url.path.rsplit("/", 1)[1]
    assert body["content"] == env.bed.catalogue.get(slug).preview  # type: ignore[union-attr]
    required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
    assert required.error == reason
    assert statement_of(env, agent) == before  # nothing accepted: nothing more to claim
    return required


@pytest.mark.parametrize(
    "case",
    [
        "not-increasing",
        "below-price",
        "over-deposit",
        "wrong-signer",
        "wrong-chain",
        "wrong-contract",
        "another-payee",
        "replayed",
    ],
)
def test_a_bad_voucher_is_refused_with_its_reason(
    env: Bed, opened: tuple[TestAgent, str], case: str
) -> None:
    agent, channel = opened
    before = statement_of(env, agent)
    served = int(before["served"])
    balances = env.bed.balances([agent.address, AUTHOR])
    offer, _ = offer_for(env, C1)
    slug, resource = C1, "same"
    signer: LocalSigner = agent.signer
    reason = "channel_invalid_signature"
    if case == "not-increasing":
        payload, reason = voucher(env, signer, channel, served - 1), "channel_amount_not_increasing"
    elif case == "below-price":
        payload, reason = voucher(env, signer, channel, PRICE - 1), "channel_amount_not_increasing"
    elif case == "over-deposit":
        payload, reason = voucher(env, signer, channel, 21 * PRICE), "channel_over_deposit"
    elif case == "wrong-signer":
        payload = voucher(env, LocalSigner.random(), channel, served + PRICE)
    elif case == "wrong-chain":
        payload = voucher(env, signer, channel, served + PRICE, chain_id=1)
    elif case == "wrong-contract":
        payload = voucher(env, signer, channel, served + PRICE, manager="0x" + "99" * 20)
    elif case == "another-payee":
        slug = OTHER
        offer, _ = offer_for(env, OTHER)
        payload, reason = voucher(env, signer, channel, served + PRICE), "channel_payee_mismatch"
    else:  # the first read's voucher again, for another article of the same author
        payload, reason = voucher(env, signer, channel, PRICE), "channel_voucher_used"
        resource = "none"
    response = pay_raw(env, slug, offer, payload, resource=resource)
    required = _refused(env, response, reason, agent, before)
    if case in ("not-increasing", "over-deposit", "replayed"):
        assert CHANNEL_EXTENSION in (required.extensions or {})  # where the channel stands
    assert env.bed.balances([agent.address, AUTHOR]) == balances


def test_unknown_channel_and_foreign_contract_offers_are_refused(
    env: Bed, opened: tuple[TestAgent, str]
) -> None:
    agent, _ = opened
    before = statement_of(env, agent)
    offer, _ = offer_for(env, C1)
    unknown = "0x" + "5a" * 32
    response = pay_raw(env, C1, offer, voucher(env, agent.signer, unknown, PRICE))
    _refused(env, response, "channel_unknown", agent, before)
    with env.bed.client() as http:
        missing = http.get(f"/channels/{unknown}")
    assert (missing.status_code, missing.json()["error"]) == (404, "channel_unknown")
    foreign = offer.model_copy(
        update={"extra": {**offer.extra, "channelManager": "0x" + "99" * 20}}
    )
    payload = voucher(env, agent.signer, opened[1], int(before["served"]) + PRICE)
    response = pay_raw(env, C1, foreign, payload)
    _refused(env, response, "invalid_payment_requirements", agent, before)


def test_the_same_voucher_for_the_same_read_is_served_again_uncharged(
    env: Bed, opened: tuple[TestAgent, str]
) -> None:
    agent, channel = opened
    offer, _ = offer_for(env, C1)
    served = int(statement_of(env, agent)["served"])
    payload = voucher(env, agent.signer, channel, served + PRICE)
    first = pay_raw(env, C1, offer, payload)
    again = pay_raw(env, C1, offer, payload)  # the client lost the answer and retries
    assert first.json()["complete"]
    assert again.json()["complete"]
    assert statement_of(env, agent)["served"] == str(served + PRICE)
    assert agent.channels is not None
    agent.channels.store.get(channel).top = served + PRICE  # type: ignore[union-attr]


# -- settlement, close, withdraw, and reads racing a close -----------------------------------


def test_claims_and_a_racing_close_add_up_to_the_atomic_unit() -> None:
    env = _bed()
    handler = env.bed.channels
    assert handler is not None
    author = AUTHOR
    agents = [channel_agent(env) for _ in range(3)]
    for agent in agents:
        give_gas(env, agent.address)
    starting = {a.address: env.bed.balance(a.address) for a in agents}
    author_before = env.bed.balance(author)
    reads = [3, 5, 2]
    for agent, count in zip(agents, reads, strict=True):
        for _ in range(count):
            assert read(env, agent, env.fresh()).json()["complete"]

    batch = handler.settler.settle()
    assert (len(batch.transactions), batch.claimed) == (1, 3)  # three channels, one claim
    assert env.bed.balance(author) - author_before == 10 * PRICE

    # The first payer asks to close; the server has not polled yet, so one more read races
    # the close and is accepted: it stays claimable during the grace period.
    racer = agents[0]
    assert racer.channels is not None
    store = racer.channels.store
    channel = racer.channels.channels()[0].channel_id
    payer = Transactor(env.bed.chain, racer.signer)
    handler.manager.request_close(payer, bytes.fromhex(channel[2:]))  # from another process
    assert read(env, racer, env.fresh()).json()["complete"]
    handler.watch.poll()  # sees CloseRequested: no more reads, and an urgent claim
    deadline = time.monotonic() + 10
    while handler.statement(bytes.fromhex(channel[2:]))["claimed"] != str(4 * PRICE):  # type: ignore[index]
        assert time.monotonic() < deadline, "the settler did not claim the closing channel"
        time.sleep(0.02)
    refused = read(env, racer, env.fresh())
    assert (refused.status_code, refused.json()["error"]) == (402, "channel_closed")

    advance(env, GRACE + 1)
    refund = withdraw(env.bed.chain, racer.signer, store, channel)
    assert refund == 20 * PRICE - 4 * PRICE
    # The payer parted with exactly the four reads it had.
    assert env.bed.balance(racer.address) == starting[racer.address] - 4 * PRICE
    (view,) = describe(env.bed.chain, store)  # what `agent-pay channels list` prints
    assert view.state is not None
    assert (view.record.status, view.state.status, view.record.refund) == (
        "closed",
        ChannelStatus.CLOSED,
        16 * PRICE,
    )
    # The closed channel is never used again: the next read opens a new one.
    assert read(env, racer, env.fresh()).json()["complete"]
    statuses = sorted(r.status for r in racer.channels.channels())
    assert statuses == ["closed", "open"]

    env.bed.close()  # the last round claims what is still due
    assert env.bed.balance(author) - author_before == (4 + 5 + 2) * PRICE + PRICE
    for agent, count in zip(agents[1:], reads[1:], strict=True):
        state = handler.manager.channel(bytes.fromhex(agent.channels.channels()[0].channel_id[2:]))  # type: ignore[union-attr]
        assert (state.claimed, state.status) == (count * PRICE, ChannelStatus.OPEN)


# -- restarts --------------------------------------------------------------------------------


def test_a_restarted_agent_resumes_from_the_server(env: Bed, tmp_path: Path) -> None:
    signer = LocalSigner.random()
    env.bed.fund(signer.address, "USDX", "5")
    usdx = [env.bed.tokens["USDX"].asset]
    policy = SpendingPolicy.per_token(usdx, max_per_payment="1", budget="10")

    def start() -> TestAgent:
        channels = ChannelClientScheme(
            signer,
            policy,
            ClientChannelStore(tmp_path),
            ChannelPolicy(min_expected_reads=1, deposit_reads=20),
        )
        return TestAgent(signer, channels.payment_auth(), channels)

    agent = start()
    for _ in range(3):
        assert read(env, agent, env.fresh()).json()["complete"]
    offer, challenge = offer_for(env, C1)
    assert agent.channels is not None
    agent.channels.sign(offer, challenge)  # signed, then the process died before sending it

    agent = start()  # a new process: the store on disk, nothing in memory
    assert agent.channels is not None
    with env.bed.client() as http:
        assert agent.channels.resume(http) == 1
    block = env.bed.chain.block_number()
    for _ in range(3):
        assert read(env, agent, env.fresh()).json()["complete"]
    assert env.bed.chain.block_number() == block  # the same channel: no new deposit
    (record,) = agent.channels.channels()
    statement = statement_of(env, agent)
    # The lost voucher's range was skipped, reported unpaid, and paid into by a later read:
    # six reads served, six prices signed for, nothing lost by the payer.
    assert (statement["served"], statement["highest"]) == (str(6 * PRICE), str(6 * PRICE))
    assert "unpaid" not in statement
    assert (record.top, record.served) == (6 * PRICE, 6 * PRICE)


# -- gas per read at 1,000 reads per channel -------------------------------------------------


@pytest.mark.slow
def test_gas_per_read_at_1000_reads_per_channel_is_under_1_percent_of_exact(
    record_property: Any,
) -> None:
    env = _bed()
    handler = env.bed.channels
    assert handler is not None
    offers = {scheme: offer_for(env, C1, scheme) for scheme in ("channel", "exact")}
    offer, challenge = offers["channel"]
    channels, reads = 5, 1000
    agents = [channel_agent(env, usdx="101", deposit_reads=reads) for _ in range(channels)]
    author = AUTHOR
    author_before = env.bed.balance(author)

    opens = claims = 0
    for agent in agents:  # the opening read goes through the app and the ledger
        opening = read(env, agent, C1)
        tx = decode_header(opening.headers[PAYMENT_RESPONSE_HEADER], SettleResponse).transaction
        opens += env.bed.chain.get_receipt(bytes.fromhex(tx[2:])).gas_used  # type: ignore[union-attr]
        give_gas(env, agent.address)
    builder = env.bed.server.paywall.schemes["channel"]
    path = f"/articles/{C1}"
    for n in range(2, reads + 1):  # the rest: client scheme and server inline charge, no HTTP
        for agent in agents:
            assert agent.channels is not None
            payment = agent.channels.sign(offer, challenge)
            charge = asyncio.run(builder.charge_inline(payment, offer, path))
            agent.channels.settled(payment, charge.settle_response())
        if n % 100 == 0:  # a claim round every 100 reads per channel
            claims += handler.settler.settle().gas_used
    # The "exact" scheme's gas per read, measured here: one transfer to the same author (who
    # holds tokens already, the cheaper case: the stricter comparison).
    exact_agent = env.bed.agent(funds={"USDX": "1"}, tokens=["USDX"])
    paid = read(env, exact_agent, C1)
    exact_tx = decode_header(paid.headers[PAYMENT_RESPONSE_HEADER], SettleResponse).transaction
    exact_gas = env.bed.chain.get_receipt(bytes.fromhex(exact_tx[2:])).gas_used  # type: ignore[union-attr]

    for agent in agents:  # the payers close: request, claim in the grace period, withdraw
        store = agent.channels.store  # type: ignore[union-attr]
        channel = agent.channels.channels()[0].channel_id  # type: ignore[union-attr]
        request_close(env.bed.chain, agent.signer, store, channel)
    claims += handler.settler.settle().gas_used  # nothing left to claim: a no-op
    advance(env, GRACE + 1)
    for agent in agents:
        store = agent.channels.store  # type: ignore[union-attr]
        channel = agent.channels.channels()[0].channel_id  # type: ignore[union-attr]
        refund = withdraw(env.bed.chain, agent.signer, store, channel)
        assert refund == 0  # the deposit paid exactly 1,000 reads
    payers = {a.address for a in agents}
    transactions = {e.transaction_hash for e in env.bed.chain.get_logs(handler.manager.address)}
    receipts = [env.bed.chain.get_receipt(t) for t in transactions]
    closes = [r.gas_used for r in receipts if r is not None and r.sender in payers]
    assert len(closes) == 2 * channels  # request_close and withdraw, per payer
    gas = opens + claims + sum(closes)
    per_read = gas / (channels * reads)
    ratio = per_read / exact_gas
    print(
        f"\nchannel gas per read at {reads} reads x {channels} channels: {per_read:.0f} "
        f"({ratio:.2%} of exact's {exact_gas}); opens {opens}, claims {claims} in "
        f"{len(handler.settler.rounds)} rounds, closes {sum(closes)}"
    )
    record_property("channel_gas_per_read", round(per_read))
    record_property("exact_gas_per_read", exact_gas)
    assert ratio <= 0.01
    assert env.bed.balance(author) - author_before == channels * reads * PRICE + PRICE
    env.bed.close()


# -- voucher reads: receipts and free re-reads -------------------------------------------------


def voucher_read(env: Bed, agent: TestAgent) -> tuple[str, httpx.Response]:
    """A fresh article read by voucher on `agent`'s open channel (the inline path)."""
    slug = env.fresh()
    block = env.bed.chain.block_number()
    response = read(env, agent, slug)
    assert response.json()["complete"]
    settled = decode_header(response.headers[PAYMENT_RESPONSE_HEADER], SettleResponse)
    assert settled.transaction == ""  # a voucher, no deposit
    assert env.bed.chain.block_number() == block
    return slug, response


def settlement_of(response: httpx.Response) -> SettleResponse:
    return decode_header(response.headers[PAYMENT_RESPONSE_HEADER], SettleResponse)


def challenge_of(env: Bed, slug: str) -> EntitlementChallenge:
    with env.bed.client() as http:
        return challenge_for(http, slug)


def prove(
    env: Bed,
    signer: LocalSigner,
    slug: str,
    *,
    payer: str | None = None,
    resource: str | None = None,
    receipt: SignedReceipt | None = None,
) -> httpx.Response:
    """GET `slug` with an entitlement proof signed by `signer` (for `resource`, by default
    the article's own path), claiming to be `payer` (`signer` by default)."""
    path = f"/articles/{slug}"
    header = proof_header(
        signer, challenge_of(env, slug), resource or path, payer=payer, receipt=receipt
    )
    with env.bed.client() as http:
        return http.get(path, headers={ENTITLEMENT_HEADER: header})


def published_signer(env: Bed) -> str:
    with env.bed.client() as http:
        return str(http.get("/.well-known/agent-pay").json()["receiptSigner"])


def test_a_voucher_read_carries_no_receipt_and_the_client_records_the_purchase(
    env: Bed,
) -> None:
    agent = channel_agent(env)
    assert read(env, agent, env.fresh()).json()["complete"]  # opens the channel
    slug, response = voucher_read(env, agent)
    assert response.headers["Cache-Control"] == "private, no-store"
    assert response.headers["Content-Type"] == "application/json"
    assert set(response.headers["Access-Control-Expose-Headers"].split(", ")) == {
        "PAYMENT-REQUIRED",
        "PAYMENT-RESPONSE",
        "AGENT-PAY-RECEIPT",
    }
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert response.json()["complete"]
    extensions = settlement_of(response).extensions or {}
    assert CHANNEL_EXTENSION in extensions  # where the channel stands, as before
    assert RECEIPT_EXTENSION not in extensions  # no receipt signed per voucher read
    url = f"http://testserver/articles/{slug}"
    record = agent.auth.payments[-1]
    assert (record.offer.scheme, record.receipt) == ("channel", None)
    store = agent.auth.receipts
    assert store.find(url, agent.address) is None
    assert store.bought(url, agent.address)  # so the next read proves the key
    assert [(p.url, p.payer, p.scheme) for p in store.purchases(agent.address)] == [
        (url, agent.address, "channel")
    ]


def test_a_voucher_read_article_is_read_again_free_with_a_signed_receipt(env: Bed) -> None:
    agent = channel_agent(env)
    assert read(env, agent, env.fresh()).json()["complete"]
    accepted_from = int(time.time())
    slug, _ = voucher_read(env, agent)
    accepted_by = int(time.time())
    assert agent.channels is not None
    (record,) = agent.channels.channels()
    top, payments = record.top, len(agent.auth.payments)
    before = statement_of(env, agent)
    usdx = env.bed.tokens["USDX"].asset
    spent = agent.spending.spent(usdx)
    block = env.bed.chain.block_number()
    article = env.bed.catalogue.get(slug)
    assert article is not None

    receipts = []
    for _ in range(2):
        again = read(env, agent, slug)
        assert again.status_code == 200
        assert again.json()["content"] == article.body
        assert PAYMENT_RESPONSE_HEADER not in again.headers  # nothing paid
        receipts.append(load_receipt(again.headers[RECEIPT_HEADER]))
    assert agent.auth.rereads == [f"http://testserver/articles/{slug}"] * 2
    assert (record.top, len(agent.auth.payments)) == (top, payments)  # no new voucher
    assert statement_of(env, agent) == before  # `served` unchanged
    assert agent.spending.spent(usdx) == spent
    assert env.bed.chain.block_number() == block

    # The re-read's receipt is the voucher read's: it verifies against the published signer,
    # names no transaction and the read's price, and is the same at every re-read.
    receipt = receipts[0]
    assert receipts[1] == receipt
    assert verify_receipt(receipt, published_signer(env)) == receipt
    claims = (
        receipt.scheme,
        receipt.payer,
        receipt.pay_to,
        receipt.resource,
        receipt.amount,
        receipt.asset,
        receipt.transaction,
    )
    assert claims == (
        "channel",
        agent.address,
        article.author,
        f"http://testserver/articles/{slug}",
        PRICE,
        env.bed.tokens["USDX"].address,
        NO_TRANSACTION,
    )
    assert accepted_from <= receipt.issued_at <= accepted_by  # when the voucher was accepted
    # The client keeps it: the purchase now has its signed receipt.
    kept = agent.auth.receipts.find(f"http://testserver/articles/{slug}", agent.address)
    assert kept is not None
    assert kept.receipt == receipt


def test_a_proof_for_what_the_payer_did_not_buy_by_voucher_is_refused(env: Bed) -> None:
    agent = channel_agent(env)
    assert read(env, agent, env.fresh()).json()["complete"]
    bought, _ = voucher_read(env, agent)
    owned = prove(env, agent.signer, bought)  # the payer's own proof: the receipt
    assert owned.status_code == 200
    receipt = load_receipt(owned.headers[RECEIPT_HEADER])
    unbought = env.fresh()
    thief = LocalSigner.random()
    before = statement_of(env, agent)
    cases = [
        prove(env, agent.signer, unbought),  # the payer, for an article it did not buy
        prove(env, thief, bought, payer=agent.address),  # another key, claiming the payer
        prove(env, thief, bought, receipt=receipt),  # another key, with the copied receipt
        prove(env, agent.signer, unbought, resource=f"/articles/{bought}"),  # another article
    ]
    for refused, slug in zip(cases, [unbought, bought, bought, unbought], strict=True):
        body = refused.json()
        assert refused.status_code == 402, body
        assert (body["error"], body["complete"]) == ("entitlement_invalid", False)
        article = env.bed.catalogue.get(slug)
        assert article is not None
        assert article.remainder not in refused.text
        assert RECEIPT_HEADER not in refused.headers
    assert statement_of(env, agent) == before


def test_a_replayed_voucher_doubles_neither_the_charge_nor_the_entitlement(
    env: Bed, opened: tuple[TestAgent, str]
) -> None:
    agent, channel = opened
    offer, _ = offer_for(env, C1)
    served = int(statement_of(env, agent)["served"])
    payload = voucher(env, agent.signer, channel, served + PRICE)
    responses = [pay_raw(env, C1, offer, payload) for _ in range(3)]  # answers lost, retried
    assert all(r.json()["complete"] for r in responses)
    assert all(RECEIPT_EXTENSION not in (settlement_of(r).extensions or {}) for r in responses)
    assert statement_of(env, agent)["served"] == str(served + PRICE)
    handler = env.bed.channels
    assert handler is not None
    paid = handler.paid_read(agent.address, f"/articles/{C1}")  # entitled (once: see below)
    assert paid is not None
    assert paid.price == PRICE
    again = prove(env, agent.signer, C1)
    assert again.status_code == 200
    assert load_receipt(again.headers[RECEIPT_HEADER]).amount == PRICE  # one price
    assert agent.channels is not None
    agent.channels.store.get(channel).top = served + PRICE  # type: ignore[union-attr]


# -- voucher re-reads across a server restart ------------------------------------------------


@dataclass
class Server:
    """A server's state on disk: its channel store directory and its ledger."""

    bed: Bed
    channels_dir: Path
    options: ChannelOptions


def _file_bed(tmp_path: Path) -> Server:
    clock = ShiftedClock()
    options = replace(QUIET, data_dir=tmp_path / "channels", flush_interval=3600)
    bed = Testbed.create(
        articles=CATALOGUE,
        chain=EmbeddedChain(clock=clock),
        schemes=("exact", "channel"),
        channel_options=options,
        ledger=Ledger.open(tmp_path / "server"),
    )
    slugs = iter([f"note-{i:03d}" for i in range(1, 160)])
    return Server(Bed(bed, clock, slugs), tmp_path / "channels", options)


def restart(server: Server, channels_dir: Path) -> None:
    """A new server process: a channel handler loaded from `channels_dir`, a new app on the
    same ledger and chain, a new receipt key. (The old handler is left as it is.)"""
    bed = server.bed.bed
    old = bed.channels
    assert old is not None
    options = replace(server.options, data_dir=channels_dir)
    gas = Transactor(bed.chain, dev_signer(FACILITATOR_INDEX))
    bed.parts = assemble(
        bed.chain,
        bed.tokens,
        gas,
        catalogue=bed.catalogue,
        schemes=("exact", "channel"),
        channel_manager=old.manager,
        channel_options=options,
        ledger=bed.ledger,
        receipt_signer=LocalSigner.random(),
    )


def crash_image(directory: Path, into: Path) -> Path:
    """What a crash leaves of the channel store in `directory`: its files as they are now."""
    into.mkdir()
    for name in ("channels.sqlite", "channels.sqlite-wal"):
        if (directory / name).exists():
            shutil.copy(directory / name, into / name)
    return into


def test_voucher_re_reads_survive_a_server_and_a_client_restart(tmp_path: Path) -> None:
    server = _file_bed(tmp_path)
    env = server.bed
    receipts = tmp_path / "receipts"
    agent = channel_agent(env, receipts=ReceiptStore.open(receipts))
    opening = env.fresh()
    assert read(env, agent, opening).json()["complete"]  # the ledger path
    slug, _ = voucher_read(env, agent)
    served = statement_of(env, agent)["served"]
    agent.auth.receipts.close()  # the agent stops
    old = env.bed.channels
    assert old is not None
    old.close()  # a clean stop: the store is written
    restart(server, server.channels_dir)
    # A new agent process: a new PaymentAuth over the same receipt store, that cannot pay.
    usdx = env.bed.tokens["USDX"].asset
    restarted = PaymentAuth(
        agent.signer,
        SpendingPolicy.per_token([usdx], max_per_payment="1", budget="0"),
        receipts=ReceiptStore.open(receipts),
    )
    try:
        with env.bed.client() as http:
            answers = [http.get(f"/articles/{b}", auth=restarted) for b in (opening, slug)]
        for again in answers:
            assert again.status_code == 200
            assert again.json()["complete"]
            assert PAYMENT_RESPONSE_HEADER not in again.headers
        assert restarted.rereads == [
            f"http://testserver/articles/{opening}",
            f"http://testserver/articles/{slug}",
        ]
        assert restarted.payments == []
        # The voucher read's receipt is signed at the re-read, by the new server's key.
        receipt = load_receipt(answers[1].headers[RECEIPT_HEADER])
        assert verify_receipt(receipt, published_signer(env)).amount == PRICE
        assert statement_of(env, agent)["served"] == served == str(2 * PRICE)
    finally:
        restarted.receipts.close()
        env.bed.close()
        env.bed.ledger.close()


def test_a_crash_loses_a_voucher_and_its_entitlement_together_and_the_payer_pays_once(
    tmp_path: Path,
) -> None:
    server = _file_bed(tmp_path)
    env = server.bed
    agent = channel_agent(env)
    assert read(env, agent, env.fresh()).json()["complete"]
    kept, _ = voucher_read(env, agent)
    handler = env.bed.channels
    assert handler is not None
    handler.store.flush()  # the writer's last round before the crash
    lost, _ = voucher_read(env, agent)  # accepted, not written: lost with the process
    assert handler.paid_read(agent.address, f"/articles/{lost}") is not None
    restart(server, crash_image(server.channels_dir, tmp_path / "after-crash"))
    try:
        assert read(env, agent, kept).status_code == 200  # written: a free re-read
        assert agent.auth.rereads == [f"http://testserver/articles/{kept}"]
        statement = statement_of(env, agent)
        assert (statement["served"], statement["highest"]) == (str(2 * PRICE), str(2 * PRICE))
        # The lost read's entitlement went with its voucher: reading it again pays, and the
        # forgotten slice shows as unpaid ...
        again = read(env, agent, lost)
        assert again.json()["complete"]
        assert agent.auth.payments[-1].offer.scheme == "channel"
        assert statement_of(env, agent)["unpaid"] == [[str(2 * PRICE), str(3 * PRICE)]]
        # ... which the client's next read pays into: four articles, four prices signed.
        assert read(env, agent, env.fresh()).json()["complete"]
        statement = statement_of(env, agent)
        assert (statement["served"], statement["highest"]) == (str(4 * PRICE), str(4 * PRICE))
        assert "unpaid" not in statement
        assert len(agent.auth.payments) == 5  # the lost article twice; one more read free
    finally:
        env.bed.close()
        handler.watch.close()  # the crashed process: no last claim round
        handler.settler.close(final_round=False)
        handler.store.close()
        env.bed.ledger.close()


def test_a_replay_is_written_once_and_an_unreadable_store_is_a_503(tmp_path: Path) -> None:
    server = _file_bed(tmp_path)
    env = server.bed
    agent = channel_agent(env)
    opening = env.fresh()
    assert read(env, agent, opening).json()["complete"]
    assert agent.channels is not None
    (record,) = agent.channels.channels()
    channel = record.channel_id
    slug = env.fresh()
    offer, _ = offer_for(env, slug)
    payload = voucher(env, agent.signer, channel, 2 * PRICE)
    for _ in range(3):
        assert pay_raw(env, slug, offer, payload).json()["complete"]
    handler = env.bed.channels
    assert handler is not None
    handler.store.flush()
    with sqlite3.connect(server.channels_dir / "channels.sqlite") as db:
        rows = db.execute("SELECT cumulative, price, resource FROM paid_reads").fetchall()
    assert sorted(rows) == [  # one row per read paid, the replays none
        (str(PRICE), str(PRICE), f"/articles/{opening}"),
        (str(2 * PRICE), str(PRICE), f"/articles/{slug}"),
    ]
    env.bed.close()  # the store is closed: entitlements cannot be read
    try:
        response = prove(env, agent.signer, slug)
        assert response.status_code == 503  # not "not bought": nothing would be paid twice
    finally:
        env.bed.ledger.close()


# -- top-ups ---------------------------------------------------------------------------------


def test_a_used_up_channel_is_topped_up_and_reads_on(env: Bed) -> None:
    agent = channel_agent(env, deposit_reads=10)  # the offer's minimum deposit: 10 reads
    assert agent.channels is not None
    slugs = [env.fresh() for _ in range(12)]
    for slug in slugs[:10]:
        assert read(env, agent, slug).json()["complete"]
    (record,) = agent.channels.channels()
    assert (record.status, record.deposit, record.top) == ("exhausted", 10 * PRICE, 10 * PRICE)
    chain = env.bed.chain
    usdx = env.bed.tokens["USDX"]
    balance = usdx.balance_of(agent.address)

    block = chain.block_number()
    assert read(env, agent, slugs[10]).json()["complete"]  # the voucher carries a top-up
    assert chain.block_number() == block + 1  # one transaction: the top-up
    (record,) = agent.channels.channels()  # the same channel, no new one
    assert (record.status, record.deposit, record.top_up_payload) == ("open", 20 * PRICE, None)
    assert usdx.balance_of(agent.address) == balance - 10 * PRICE
    handler = env.bed.channels
    assert handler is not None
    on_chain = handler.manager.channel(bytes.fromhex(record.channel_id[2:]))
    assert on_chain.deposit == 20 * PRICE
    assert statement_of(env, agent)["deposit"] == str(20 * PRICE)

    block = chain.block_number()
    assert read(env, agent, slugs[11]).json()["complete"]  # a plain voucher again
    assert chain.block_number() == block
    assert statement_of(env, agent)["served"] == str(12 * PRICE)
    # The budget counts the whole deposit: 12 reads spent, 8 still locked in the channel.
    asset = env.bed.tokens["USDX"].asset
    assert agent.spending.committed_or_reserved(asset) == 20 * PRICE


def test_a_top_up_the_payer_cannot_fund_is_refused_and_nothing_moves(env: Bed) -> None:
    agent = channel_agent(env, usdx="1", deposit_reads=10)  # exactly one deposit's worth
    assert agent.channels is not None
    slugs = [env.fresh() for _ in range(11)]
    for slug in slugs[:10]:
        assert read(env, agent, slug).json()["complete"]
    chain = env.bed.chain
    block = chain.block_number()
    before = statement_of(env, agent)

    refused = read(env, agent, slugs[10])
    assert (refused.status_code, refused.json()["error"]) == (402, Reason.INSUFFICIENT_BALANCE)
    assert "content" not in refused.json() or not refused.json()["complete"]
    assert chain.block_number() == block  # no transaction
    assert statement_of(env, agent) == before  # nothing served, nothing deposited
    (record,) = agent.channels.channels()
    assert (record.deposit, record.top_up_payload, record.top_up_failed) == (
        10 * PRICE,
        None,
        True,
    )
    asset = env.bed.tokens["USDX"].asset
    assert agent.spending.committed_or_reserved(asset) == 10 * PRICE


def test_concurrent_reads_share_one_top_up(env: Bed) -> None:
    agent = channel_agent(env, deposit_reads=10)
    assert agent.channels is not None
    for slug in [env.fresh() for _ in range(10)]:
        assert read(env, agent, slug).json()["complete"]
    slugs = [env.fresh() for _ in range(6)]
    chain = env.bed.chain
    block = chain.block_number()

    async def many() -> list[httpx.Response]:
        async with env.bed.async_client(agent) as http:
            return await asyncio.gather(*(http.get(f"/articles/{slug}") for slug in slugs))

    responses = asyncio.run(many())
    assert all(r.json()["complete"] for r in responses)
    assert isinstance(chain, EmbeddedChain)
    numbers = range(block + 1, chain.block_number() + 1)
    mined = [chain.evm.get_canonical_block_by_number(n) for n in numbers]
    assert sum(len(b.transactions) for b in mined) == 1  # one top-up, none reverted
    (record,) = agent.channels.channels()
    assert (record.deposit, record.top_up_payload) == (20 * PRICE, None)
    statement = statement_of(env, agent)
    assert (statement["deposit"], statement["served"]) == (str(20 * PRICE), str(16 * PRICE))
