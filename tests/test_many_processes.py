"""Many processes on one node, as a user would run them: `agent-pay node`, `agent-pay
facilitator`, `agent-pay serve --facilitator-url`, and ten `agent-pay read` agents paying at
once, each its own process with its own key. Afterwards every balance is exact.

Everything listens on 127.0.0.1 only and every process is stopped at the end, pass or fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from agent_pay.chain.contract import Transactor
from agent_pay.chain.dev_roles import FACILITATOR_SERVICE_INDEX
from agent_pay.chain.devkeys import dev_account, dev_signer
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.node.anvil import free_port, stop_process, wait_for_rpc
from agent_pay.node.deployment import find_stablecoins
from agent_pay.server.catalogue import Catalogue
from agent_pay.signing import LocalSigner
from agent_pay.stack import sample_articles_dir

pytestmark = pytest.mark.slow  # every test here starts processes

AGENTS = 10
SLUGS = ("why-micropayments-failed", "reading-a-vyper-contract")  # 0.1 + 0.25 USDX


class Processes:
    """Starts `agent-pay` subcommands as child processes and stops them all at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[subprocess.Popen[bytes]] = []
        self.environ = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_PAY_")}

    def start(self, args: Sequence[str], **env: str) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "agent_pay.cli", *args],
            cwd=self.workdir,
            env={**self.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            stop_process(child)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


def wait_for_http(url: str, child: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            _, err = child.communicate()
            raise AssertionError(f"{child.args} exited: {err.decode(errors='replace')}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not come up")


def test_a_server_and_ten_agent_processes_on_one_node(processes: Processes) -> None:
    node_port, facilitator_port, server_port = free_port(), free_port(), free_port()
    node_url = f"http://127.0.0.1:{node_port}"
    node = processes.start(["node", "--port", str(node_port)])
    wait_for_rpc(node_url, timeout=30, process=node)
    facilitator_url = f"http://127.0.0.1:{facilitator_port}"
    facilitator = processes.start(
        ["facilitator", "--chain", node_url, "--port", str(facilitator_port)]
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
            "--port",
            str(server_port),
        ]
    )
    wait_for_http(f"{server_url}/articles", server)

    catalogue = Catalogue.from_directory(sample_articles_dir())
    articles = [catalogue.get(slug) for slug in SLUGS]
    with JsonRpcChain(node_url) as chain:
        usdx = find_stablecoins(chain)["USDX"]
        agents = [LocalSigner.random() for _ in range(AGENTS)]
        usdx.mint_many(Transactor(chain, dev_signer(0)), [(a.address, 1_000_000) for a in agents])
        authors = sorted({a.author for a in articles if a is not None})
        gas_account = dev_account(FACILITATOR_SERVICE_INDEX).address
        supply = usdx.total_supply()
        before = {a: usdx.balance_of(a) for a in authors}
        gas_before = chain.get_balance(gas_account)

        readers = [
            processes.start(
                [
                    "read",
                    *(f"{server_url}/articles/{slug}" for slug in SLUGS),
                    "--chain",
                    node_url,
                    "--max-price",
                    "0.3",
                    "--budget",
                    "1",
                ],
                AGENT_PAY_PRIVATE_KEY="0x" + agent.unsafe_export_private_key().hex(),
            )
            for agent in agents
        ]
        outcomes = [reader.communicate(timeout=60) for reader in readers]

        for reader, (out, err) in zip(readers, outcomes, strict=True):
            assert reader.returncode == 0, err.decode(errors="replace")
            for article in articles:
                assert article is not None
                assert article.title in out.decode()
            assert err.decode().count("paid ") == 2
        for agent in agents:
            assert usdx.balance_of(agent.address) == 1_000_000 - 350_000
        expected = dict(before)
        for article in articles:
            assert article is not None
            expected[article.author] += AGENTS * int(article.prices["USDX"] * 10**6)
        assert {a: usdx.balance_of(a) for a in authors} == expected
        assert usdx.total_supply() == supply
        assert chain.get_balance(gas_account) < gas_before  # the facilitator paid the gas
    for child in (node, facilitator, server):
        assert child.poll() is None  # all still up: nothing crashed under load
