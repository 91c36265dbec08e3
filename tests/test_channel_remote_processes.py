"""Channels behind a remote facilitator, as a user runs them: `agent-pay node`, `agent-pay
facilitator` (which keeps the channels), `agent-pay serve --facilitator-url URL --schemes
exact,channel`, and an `agent-pay read` that opens a channel, pays by voucher and re-reads.
The facilitator claims on the way out. Everything on 127.0.0.1; every process stopped.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.node.anvil import free_port, wait_for_rpc
from agent_pay.node.deployment import find_stablecoins
from agent_pay.signing import LocalSigner
from tests.test_many_processes import Processes, processes, wait_for_http

__all__ = ["processes"]  # the fixture

PAYEE = "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f"  # the author of both articles
SLUGS = ("http-status-codes-nobody-uses", "pricing-content-for-machine-readers")  # 0.1 USDX each


@pytest.mark.slow
def test_serve_takes_vouchers_through_a_facilitator_process(
    processes: Processes, tmp_path: Path
) -> None:
    node_port, facilitator_port, server_port = free_port(), free_port(), free_port()
    node_url = f"http://127.0.0.1:{node_port}"
    node = processes.start(["node", "--port", str(node_port)])
    wait_for_rpc(node_url, timeout=30, process=node)
    facilitator_url = f"http://127.0.0.1:{facilitator_port}"
    facilitator = processes.start(
        ["facilitator", "--chain", node_url, "--port", str(facilitator_port)],
        AGENT_PAY_HOME=str(tmp_path / "facilitator"),
    )
    wait_for_http(f"{facilitator_url}/supported", facilitator)
    server_url = f"http://127.0.0.1:{server_port}"
    server = processes.start(
        [
            "serve",
            "--chain",
            node_url,
            "--facilitator-url",
            facilitator_url,
            "--schemes",
            "exact,channel",
            "--port",
            str(server_port),
        ],
        AGENT_PAY_HOME=str(tmp_path / "server"),
    )
    wait_for_http(f"{server_url}/articles", server)

    agent = LocalSigner.random()
    with JsonRpcChain(node_url) as chain:
        usdx = find_stablecoins(chain)["USDX"]
        usdx.mint_many(Transactor(chain, dev_signer(0)), [(agent.address, 2_000_000)])
        payee_before = usdx.balance_of(PAYEE)
        urls = [f"{server_url}/articles/{slug}" for slug in (*SLUGS, SLUGS[0])]  # one re-read
        policy = ["--max-price", "0.2", "--budget", "2", "--channel-deposit", "1"]
        reader = processes.start(
            ["read", *urls, "--chain", node_url, *policy],
            AGENT_PAY_PRIVATE_KEY="0x" + agent.unsafe_export_private_key().hex(),
            AGENT_PAY_HOME=str(tmp_path / "agent"),
        )
        _, err = reader.communicate(timeout=120)
        assert reader.returncode == 0, err.decode(errors="replace")
        said = err.decode()
        assert said.count("paid ") == 2, said  # the third read is a free re-read
        assert "opened by deposit tx 0x" in said
        assert said.count("no transaction)") == 1, said  # the second: a voucher
        assert usdx.balance_of(agent.address) == 1_000_000  # the deposit, nothing more
        assert usdx.balance_of(PAYEE) == payee_before  # nothing claimed yet

        facilitator.send_signal(signal.SIGTERM)  # it claims the vouchers on the way out
        stdout, stderr = facilitator.communicate(timeout=60)
        assert facilitator.returncode == 0, stderr.decode(errors="replace")
        assert "channels    on 0x" in stdout.decode()
        assert usdx.balance_of(PAYEE) - payee_before == 200_000
    assert server.poll() is None  # the server is still up
