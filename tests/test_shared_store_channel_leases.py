"""Channels kept in process on one PostgreSQL store by two `agent-pay serve` instances.

Real processes: `agent-pay node` (with its channel contract), a PostgreSQL started by the test,
two `agent-pay serve --store postgresql://... --schemes exact,channel` instances A and B (B
with `--workers 2`: three processes on the store), no facilitator service: each accepts
vouchers on the channels whose lease it holds (agent_pay.store.postgres.channels).

- A channel opened on A pays on B (its lease handed over).
- One voucher sent to both at once is served as one instance serves it twice (a replay,
  counted once).
- A frozen (SIGSTOP): B takes the lease once it expires; A, thawed, takes it back; nothing
  lost, nothing counted twice.
- A killed mid-stream: B takes the lease once it expires and the payer reads on; what A's
  last checkpoint missed is the payee's loss, at most what A accepted last.
- The payee's claim (by B, on its way out) is the payer's highest voucher: exactly what the
  payer signed for the reads it had.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.chain.stablecoin import Stablecoin
from agent_pay.client.channels import ChannelClientScheme, ChannelPolicy
from agent_pay.client.policy import SpendingPolicy
from agent_pay.node.anvil import free_port, wait_for_rpc
from agent_pay.node.deployment import find_channel_manager, find_stablecoins
from agent_pay.protocol.codec import PAYMENT_SIGNATURE_HEADER, encode_header
from agent_pay.signing import LocalSigner
from tests.test_many_processes import Processes, processes, wait_for_http
from tests.test_shared_store_channels import AUTHOR, EIP, PRICES, VYPER, _channel_offer

__all__ = ["processes"]  # the fixture

DEPOSIT = 3_000_000
FUNDS = 4_000_000


def _serve(
    processes: Processes, node_url: str, store: str, workdir: Path, key: str, workers: int = 1
) -> str:
    port = free_port()
    server = processes.start(
        [
            "serve",
            "--chain",
            node_url,
            "--store",
            store,
            "--schemes",
            "exact,channel",
            "--port",
            str(port),
            "--server-dir",
            str(workdir),
            "--workers",
            str(workers),
        ],
        AGENT_PAY_HOME=str(workdir),
        AGENT_PAY_RECEIPT_KEY=key,
    )
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/articles", server)
    return base


def _read(http: httpx.Client, url: str, *, patience: float = 0) -> httpx.Response:
    """GET `url`, again while it answers 503 `channel_busy` (for `patience` seconds)."""
    deadline = time.monotonic() + patience
    while True:
        response = http.get(url)
        busy = response.status_code == 503 and "channel_busy" in response.text
        if not busy or time.monotonic() > deadline:
            return response
        assert response.headers["Retry-After"] == "1"
        time.sleep(0.2)


@pytest.mark.slow
def test_in_process_channels_on_one_store_across_two_instances(
    processes: Processes, postgres_url: str, tmp_path: Path
) -> None:
    node_port = free_port()
    node_url = f"http://127.0.0.1:{node_port}"
    node = processes.start(["node", "--port", str(node_port)])  # deploys the channel contract
    wait_for_rpc(node_url, timeout=30, process=node)
    key = "0x" + os.urandom(32).hex()
    a = _serve(processes, node_url, postgres_url, tmp_path / "a", key)
    server_a = processes.children[-1]
    b = _serve(processes, node_url, postgres_url, tmp_path / "b", key, workers=2)
    server_b = processes.children[-1]
    agent = LocalSigner.random()
    with JsonRpcChain(node_url) as chain:
        usdx: Stablecoin = find_stablecoins(chain)["USDX"]
        usdx.mint_many(Transactor(chain, dev_signer(0)), [(agent.address, FUNDS)])
        author_before = usdx.balance_of(AUTHOR)
        policy = SpendingPolicy.per_token([usdx.asset], max_per_payment="1", budget="4")
        channels = ChannelClientScheme(
            agent,
            policy,
            channel_policy=ChannelPolicy(
                min_expected_reads=1, deposits={usdx.asset.address: DEPOSIT}
            ),
        )
        auth = channels.payment_auth(exact=False)
        paid = 0  # what the payer signed for the reads it had: each voucher's price, once

        def pay(base: str, slug: str, patience: float = 5) -> httpx.Response:
            """One read of `slug` at `base` paid by the payer's next voucher, sent again
            (the same voucher) while the answer is 503 `channel_busy`."""
            nonlocal paid
            offer, required = _channel_offer(base, slug, usdx.asset.address)
            header = {PAYMENT_SIGNATURE_HEADER: encode_header(channels.sign(offer, required))}
            with httpx.Client(headers=header, timeout=60) as http:
                read = _read(http, f"{base}/articles/{slug}", patience=patience)
            assert read.status_code == 200, read.text
            paid += PRICES[slug]
            return read

        # Opened on A, then a voucher on B: A hands the channel over.
        with httpx.Client(auth=auth, timeout=60) as http:
            for base, slug in ((a, EIP), (b, VYPER)):
                read = _read(http, f"{base}/articles/{slug}", patience=5)
                assert read.status_code == 200, read.text
                assert read.json()["complete"] is True
                paid += PRICES[slug]
        assert usdx.balance_of(agent.address) == FUNDS - DEPOSIT
        (record,) = channels.channels()
        assert record.top == paid

        # One voucher, the same header, at A and B at once: served by both, counted once.
        offer, required = _channel_offer(b, EIP, usdx.asset.address)
        header = encode_header(channels.sign(offer, required))
        paid += PRICES[EIP]

        def send(base: str) -> httpx.Response:
            with httpx.Client(headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=60) as http:
                return _read(http, f"{base}/articles/{EIP}", patience=5)

        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(send, (a, b)))
        assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]

        # A frozen (SIGSTOP) while it holds the channel, its last read written: B takes the
        # lease once it expires; A, thawed, accepts nothing on its old lease and takes the
        # channel back from B. Nothing lost, nothing counted twice.
        pay(a, VYPER)
        time.sleep(0.6)  # A's checkpoint (every 200 ms) has written it
        os.killpg(server_a.pid, signal.SIGSTOP)
        try:
            pay(b, EIP, patience=15)
        finally:
            os.killpg(server_a.pid, signal.SIGCONT)
        pay(a, EIP)
        statement = httpx.get(f"{a}/channels/{record.channel_id}").json()
        assert int(statement["highest"]) == int(statement["served"]) == paid
        assert "unpaid" not in statement
        time.sleep(0.6)  # written by A's checkpoint: what follows is all A can lose

        # A stream on A, A killed in the middle of it; the payer reads on at B.
        for slug in (VYPER, EIP):
            pay(a, slug)
        lost_at_most = PRICES[VYPER] + PRICES[EIP]
        os.killpg(server_a.pid, signal.SIGKILL)
        server_a.wait(timeout=10)
        started = time.monotonic()
        for slug in (EIP, VYPER):
            pay(b, slug, patience=15)
        assert time.monotonic() - started < 15  # the lease (5 s) expired, B took it
        # Written by B's checkpoint: B's other worker tells the channel as last written.
        time.sleep(0.6)
        statement = httpx.get(f"{b}/channels/{record.channel_id}").json()
        (record,) = channels.channels()
        assert int(statement["highest"]) == record.top == paid  # the payer's highest voucher
        # What A's last checkpoint missed is the payee's to lose, never more than A accepted.
        assert 0 <= paid - int(statement["served"]) <= lost_at_most

        # B claims on its way out: the highest voucher, never more than what was read.
        server_b.send_signal(signal.SIGTERM)
        _, stderr = server_b.communicate(timeout=60)
        assert server_b.returncode == 0, stderr.decode(errors="replace")
        manager = find_channel_manager(chain)
        assert manager is not None
        claimed = manager.channel(bytes.fromhex(record.channel_id[2:])).claimed
        assert claimed == record.top == paid  # every read the payer had, once
        assert usdx.balance_of(AUTHOR) - author_before == claimed
        assert usdx.balance_of(agent.address) == FUNDS - DEPOSIT
    assert node.poll() is None
