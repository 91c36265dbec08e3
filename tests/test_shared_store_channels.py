"""Channels across server instances on one PostgreSQL store, behind one facilitator service.

Real processes throughout: `agent-pay node` (with its channel contract), a PostgreSQL started
by the test, one `agent-pay facilitator` (which keeps the channels), and two `agent-pay serve
--store postgresql://... --facilitator-url URL --schemes exact,channel` instances A and B. A
channel opened through A pays by voucher on A and on B alike; a read bought on one is a free
re-read on the other; one voucher sent to both at once is served by both (as one instance
serves it twice: a replay within the facilitator's replay window) and charged once; and the
facilitator's claim on the way out pays the author what the vouchers served, which is the
highest voucher.
"""

from __future__ import annotations

import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.chain.stablecoin import Stablecoin
from agent_pay.client.channels import ChannelClientScheme, ChannelPolicy
from agent_pay.client.policy import SpendingPolicy
from agent_pay.node.anvil import free_port, wait_for_rpc
from agent_pay.node.deployment import find_stablecoins
from agent_pay.protocol import PaymentRequired, PaymentRequirements
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)
from agent_pay.protocol.extensions import ENTITLEMENT_HEADER
from agent_pay.signing import LocalSigner
from tests._entitlement import challenge_for, proof_header
from tests.test_many_processes import Processes, processes, wait_for_http

__all__ = ["processes"]  # the fixture

AUTHOR = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"  # Chen Wei: both are sold in USDX
EIP, VYPER = "eip-3009-gasless-transfers", "reading-a-vyper-contract"
PRICES = {EIP: 100_000, VYPER: 250_000}
DEPOSIT = 2_000_000
FUNDS = 3_000_000


@dataclass
class Deployment:
    """The node, the facilitator and the two instances, as the test started them."""

    node_url: str
    facilitator_url: str
    facilitator: subprocess.Popen[bytes]
    a: str
    b: str
    servers: tuple[subprocess.Popen[bytes], ...]

    def statement(self, channel_id: str) -> dict[str, Any]:
        """The facilitator's statement of `channel_id`: what it accepted on it."""
        response = httpx.get(f"{self.facilitator_url}/channels/{channel_id}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found


def _deploy(processes: Processes, store: str, workdir: Path) -> Deployment:
    node_port, facilitator_port = free_port(), free_port()
    node_url = f"http://127.0.0.1:{node_port}"
    node = processes.start(["node", "--port", str(node_port)])  # deploys the channel contract
    wait_for_rpc(node_url, timeout=30, process=node)
    facilitator_url = f"http://127.0.0.1:{facilitator_port}"
    facilitator = processes.start(
        ["facilitator", "--chain", node_url, "--port", str(facilitator_port)],
        AGENT_PAY_HOME=str(workdir / "facilitator"),
    )
    wait_for_http(f"{facilitator_url}/supported", facilitator)
    receipt_key = "0x" + os.urandom(32).hex()  # one key for every instance on the store
    bases: list[str] = []
    servers: list[subprocess.Popen[bytes]] = []
    for name in ("a", "b"):
        port = free_port()
        server = processes.start(
            [
                "serve",
                "--chain",
                node_url,
                "--store",
                store,
                "--facilitator-url",
                facilitator_url,
                "--schemes",
                "exact,channel",
                "--port",
                str(port),
                "--server-dir",
                str(workdir / name),
            ],
            AGENT_PAY_HOME=str(workdir / name),
            AGENT_PAY_RECEIPT_KEY=receipt_key,
        )
        bases.append(f"http://127.0.0.1:{port}")
        servers.append(server)
    for base, server in zip(bases, servers, strict=True):
        wait_for_http(f"{base}/articles", server)
    a, b = bases
    return Deployment(node_url, facilitator_url, facilitator, a, b, tuple(servers))


def _channel_offer(base: str, slug: str, asset: str) -> tuple[PaymentRequirements, PaymentRequired]:
    """The "channel" offer in `asset` for `slug` in the 402 of the instance at `base`, and the
    402."""
    response = httpx.get(f"{base}/articles/{slug}")
    assert response.status_code == 402
    required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
    offers = required.accepts
    return next(o for o in offers if (o.scheme, o.asset) == ("channel", asset)), required


@pytest.mark.slow
def test_one_channel_across_two_instances_on_one_store(
    processes: Processes, postgres_url: str, tmp_path: Path
) -> None:
    net = _deploy(processes, postgres_url, tmp_path)
    agent = LocalSigner.random()
    with JsonRpcChain(net.node_url) as chain:
        usdx: Stablecoin = find_stablecoins(chain)["USDX"]
        usdx.mint_many(Transactor(chain, dev_signer(0)), [(agent.address, FUNDS)])
        author_before = usdx.balance_of(AUTHOR)
        policy = SpendingPolicy.per_token([usdx.asset], max_per_payment="1", budget="3")
        channels = ChannelClientScheme(
            agent,
            policy,
            channel_policy=ChannelPolicy(
                min_expected_reads=1, deposits={usdx.asset.address: DEPOSIT}
            ),
        )
        auth = channels.payment_auth(exact=False)  # by channel, or not at all

        # Opened through A (deposit and first voucher), then a voucher on B.
        with httpx.Client(auth=auth, timeout=60) as http:
            for base, slug in ((net.a, EIP), (net.b, VYPER)):
                read = http.get(f"{base}/articles/{slug}")
                assert read.status_code == 200, read.text
                assert read.json()["complete"] is True
        assert [p.offer.scheme for p in auth.payments] == ["channel", "channel"]
        assert usdx.balance_of(agent.address) == FUNDS - DEPOSIT  # the deposit, nothing more
        (record,) = channels.channels()
        statement = net.statement(record.channel_id)
        assert statement["served"] == statement["highest"] == str(PRICES[EIP] + PRICES[VYPER])

        # Bought on one instance, a free re-read on the other, by key proof alone.
        for bought_on, other, slug in ((net.a, net.b, EIP), (net.b, net.a, VYPER)):
            with httpx.Client(base_url=bought_on) as http:
                challenge = challenge_for(http, slug)
            proof = proof_header(agent, challenge, f"/articles/{slug}")
            again = httpx.get(f"{other}/articles/{slug}", headers={ENTITLEMENT_HEADER: proof})
            assert again.status_code == 200, again.text
            assert again.json()["complete"] is True
        assert net.statement(record.channel_id)["served"] == statement["served"]

        # One voucher, the same header, sent to A and B at once (bought again, by voucher alone).
        offer, required = _channel_offer(net.b, EIP, usdx.asset.address)
        header = encode_header(channels.sign(offer, required))

        def send(base: str) -> httpx.Response:
            return httpx.get(
                f"{base}/articles/{EIP}", headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=60
            )

        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(send, (net.a, net.b)))
        # What one instance serves for the same voucher twice: the article twice, charged
        # once. Within the facilitator's replay window (300 s, until a claim makes the voucher
        # public) a voucher replayed for the same resource is served again uncharged: the
        # payer's retry of an answer it lost. Neither instance refuses it.
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        assert all(a.json()["complete"] for a in answers)
        total = 2 * PRICES[EIP] + PRICES[VYPER]
        statement = net.statement(record.channel_id)
        assert statement["served"] == statement["highest"] == str(total)  # counted once
        assert send(net.a).status_code == 200  # and again on one instance, still uncharged
        assert net.statement(record.channel_id)["served"] == str(total)

        # The facilitator claims on the way out: what the vouchers served, the highest one.
        net.facilitator.send_signal(signal.SIGTERM)
        _, stderr = net.facilitator.communicate(timeout=60)
        assert net.facilitator.returncode == 0, stderr.decode(errors="replace")
        assert usdx.balance_of(AUTHOR) - author_before == total
        assert usdx.balance_of(agent.address) == FUNDS - DEPOSIT
    assert all(server.poll() is None for server in net.servers)  # both still up
