"""The channel scheme on a real node: anvil through `JsonRpcChain`, wired by `Stack.connect`.

The tokens and the channel contract are deployed as `agent-pay deploy` deploys them (so they land
at the dev-chain default addresses); the server attaches to them. A first read opens a channel
(one transaction), every later read is a voucher that mines no block, a bad voucher is refused
with its reason and moves nothing, and the settler's claims land: after `close()` every balance
is exact to the atomic unit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from itertools import count
from typing import Any

import httpx
import pytest

from agent_pay.assembly.channels import ChannelOptions
from agent_pay.chain.channel import ChannelManager
from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_account, dev_signer
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.chain.stablecoin import Stablecoin
from agent_pay.client.channels import ChannelClientScheme, ChannelPolicy
from agent_pay.client.policy import SpendingPolicy
from agent_pay.errors import ConfigurationError
from agent_pay.node.deployment import (
    DEV_CHANNEL_MANAGER_ADDRESS,
    DEV_TOKEN_ADDRESSES,
    deploy_channel_manager,
    deploy_default_stablecoins,
    find_channel_manager,
)
from agent_pay.protocol import (
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    ResourceInfo,
    SettleResponse,
)
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)
from agent_pay.server.catalogue import Article, Catalogue
from agent_pay.signing import LocalSigner
from agent_pay.signing.voucher import Voucher, sign_voucher
from agent_pay.stack import FACILITATOR_INDEX, Stack
from agent_pay.testing import SyncASGITransport

PRICE = 100_000  # 0.1 USDX
DEPOSIT_READS = 20
AUTHOR = "0x" + "c3" * 20
CATALOGUE = Catalogue(
    [
        Article(
            slug=f"note-{i:02d}",
            title=f"Note {i}",
            author=AUTHOR,
            body="\n\n".join(f"Paragraph {p} of a note paid by voucher." for p in range(6)),
            prices={"USDX": Decimal("0.1")},
        )
        for i in range(40)
    ]
)
QUIET = ChannelOptions(  # claims only when the test says so, or on close
    refresh_interval=3600, settle_every_seconds=3600, settle_every_vouchers=10**9
)


@dataclass
class Node:
    chain: JsonRpcChain
    tokens: dict[str, Stablecoin]
    manager: ChannelManager
    slugs: Iterator[str]

    def stack(self) -> Stack:
        return Stack.connect(
            self.chain,
            self.tokens,
            Transactor(self.chain, dev_signer(FACILITATOR_INDEX)),
            articles=CATALOGUE,
            schemes=("exact", "channel"),
            channel_manager=self.manager,
            channel_options=QUIET,
        )

    def fresh(self) -> str:
        """An article nobody has bought on this node yet."""
        return next(self.slugs)

    def balance(self, address: str) -> int:
        return self.tokens["USDX"].balance_of(address)


@pytest.fixture(scope="module")
def node(anvil_url: str) -> Iterator[Node]:
    with JsonRpcChain(anvil_url) as chain:
        tokens = deploy_default_stablecoins(chain)
        manager = deploy_channel_manager(chain)
        yield Node(chain, tokens, manager, (f"note-{i:02d}" for i in count()))


@pytest.fixture(scope="module")
def stack(node: Node) -> Iterator[Stack]:
    stack = node.stack()
    yield stack
    stack.close()


@dataclass
class Agent:
    signer: LocalSigner
    channels: ChannelClientScheme
    http: httpx.Client

    def read(self, slug: str) -> httpx.Response:
        return self.http.get(f"/articles/{slug}")

    def channel_id(self) -> str:
        (record,) = self.channels.channels()
        return record.channel_id


def agent(node: Node, stack: Stack) -> Agent:
    signer = LocalSigner.random()
    stack.fund(signer.address, "USDX", "5")
    policy = SpendingPolicy.per_token([node.tokens["USDX"].asset], max_per_payment="1", budget="10")
    channels = ChannelClientScheme(
        signer, policy, channel_policy=ChannelPolicy(min_expected_reads=1, deposit_reads=20)
    )
    http = httpx.Client(
        transport=SyncASGITransport(stack.app),
        base_url="http://testserver",
        auth=channels.payment_auth(),
    )
    return Agent(signer, channels, http)


def settlement(response: httpx.Response) -> SettleResponse:
    assert response.status_code == 200, response.text
    return decode_header(response.headers[PAYMENT_RESPONSE_HEADER], SettleResponse)


# -- the deployment --------------------------------------------------------------------------


def test_the_contracts_land_at_the_dev_chain_addresses(node: Node) -> None:
    assert {s: t.address for s, t in node.tokens.items()} == dict(DEV_TOKEN_ADDRESSES)
    assert node.manager.address == DEV_CHANNEL_MANAGER_ADDRESS
    found = find_channel_manager(node.chain)
    assert found is not None
    assert (found.address, found.grace_period) == (DEV_CHANNEL_MANAGER_ADDRESS, 86_400)
    with pytest.raises(ConfigurationError, match="not an agent-pay channel contract"):
        find_channel_manager(node.chain, DEV_TOKEN_ADDRESSES["USDX"])
    with pytest.raises(ConfigurationError, match="no contract"):
        find_channel_manager(node.chain, dev_account(9).address)
    with pytest.raises(ValueError, match="needs a channel contract"):
        Stack.connect(
            node.chain,
            node.tokens,
            Transactor(node.chain, dev_signer(FACILITATOR_INDEX)),
            schemes=("exact", "channel"),
        )


# -- the happy path --------------------------------------------------------------------------


def test_vouchers_mine_no_block_and_the_claims_land_exactly(node: Node) -> None:
    stack = node.stack()  # its own server: its close() is this test's final claim round
    handler = stack.channels
    assert handler is not None
    payer = agent(node, stack)
    payer_start, author_start = node.balance(payer.signer.address), node.balance(AUTHOR)

    opening = settlement(payer.read(node.fresh()))
    assert opening.transaction != ""  # the deposit, submitted by the server
    assert node.balance(payer.signer.address) == payer_start - DEPOSIT_READS * PRICE

    block = node.chain.block_number()
    for _ in range(4):
        paid = settlement(payer.read(node.fresh()))
        assert (paid.transaction, paid.amount) == ("", PRICE)
    assert node.chain.block_number() == block  # four reads, no transaction

    batch = handler.settler.settle()  # a claim round: one transaction for the channel
    assert (len(batch.transactions), batch.claimed, batch.amount) == (1, 1, 5 * PRICE)
    assert node.balance(AUTHOR) - author_start == 5 * PRICE

    for _ in range(3):
        settlement(payer.read(node.fresh()))
    stack.close()  # the last round claims the three reads since
    payer.http.close()

    channel = bytes.fromhex(payer.channel_id()[2:])
    state = node.manager.channel(channel)
    assert (state.deposit, state.claimed) == (DEPOSIT_READS * PRICE, 8 * PRICE)
    assert node.balance(AUTHOR) - author_start == 8 * PRICE
    assert node.balance(payer.signer.address) == payer_start - DEPOSIT_READS * PRICE
    assert node.balance(handler.manager.address) >= (DEPOSIT_READS - 8) * PRICE


# -- bad input: a reason, no content, no money, no block -------------------------------------


@pytest.fixture(scope="module")
def opened(node: Node, stack: Stack) -> Agent:
    """An agent with a channel to AUTHOR (deposit 20 reads) and two reads paid."""
    payer = agent(node, stack)
    for _ in range(2):
        settlement(payer.read(node.fresh()))
    return payer


def pay_raw(stack: Stack, slug: str, payload: dict[str, Any], *, resource: bool = True) -> Any:
    with httpx.Client(transport=SyncASGITransport(stack.app), base_url="http://testserver") as h:
        challenge = decode_header(
            h.get(f"/articles/{slug}").headers[PAYMENT_REQUIRED_HEADER], PaymentRequired
        )
        offer: PaymentRequirements = next(o for o in challenge.accepts if o.scheme == "channel")
        info = ResourceInfo(url=f"http://testserver/articles/{slug}") if resource else None
        payment = PaymentPayload(x402_version=2, resource=info, accepted=offer, payload=payload)
        return h.get(
            f"/articles/{slug}", headers={PAYMENT_SIGNATURE_HEADER: encode_header(payment)}
        )


def voucher(manager: ChannelManager, signer: LocalSigner, channel: str, cumulative: int) -> Any:
    signature = sign_voucher(
        signer, manager.domain, Voucher(bytes.fromhex(channel[2:]), cumulative)
    )
    return {
        "channelId": channel,
        "cumulativeAmount": str(cumulative),
        "signature": "0x" + signature.hex(),
    }


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("replayed", "channel_voucher_used"),
        ("over-deposit", "channel_over_deposit"),
        ("wrong-signer", "channel_invalid_signature"),
    ],
)
def test_a_bad_voucher_is_refused_and_moves_nothing(
    node: Node, stack: Stack, opened: Agent, case: str, reason: str
) -> None:
    handler = stack.channels
    assert handler is not None
    channel = opened.channel_id()
    before = handler.statement(bytes.fromhex(channel[2:]))
    assert before is not None
    served = int(before["served"])
    balances = (node.balance(opened.signer.address), node.balance(AUTHOR))
    block = node.chain.block_number()
    signer, cumulative, resource = opened.signer, served + PRICE, True
    if case == "replayed":  # the first read's voucher again, for another article
        cumulative, resource = PRICE, False
    elif case == "over-deposit":
        cumulative = (DEPOSIT_READS + 1) * PRICE
    else:
        signer = LocalSigner.random()

    response = pay_raw(
        stack,
        node.fresh(),
        voucher(handler.manager, signer, channel, cumulative),
        resource=resource,
    )

    body = response.json()
    assert (response.status_code, body["error"], body["complete"]) == (402, reason, False)
    assert handler.statement(bytes.fromhex(channel[2:])) == before
    assert (node.balance(opened.signer.address), node.balance(AUTHOR)) == balances
    assert node.chain.block_number() == block
