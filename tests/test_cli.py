"""The `agent-pay` command, run in-process (`main([...])`) against a node and a server on
127.0.0.1: what it prints, and its exit codes (0 done, 2 payment refused, 1 anything else)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account

from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_account
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.cli import main
from agent_pay.node.anvil import free_port
from agent_pay.node.deployment import DEV_TOKEN_ADDRESSES, find_stablecoins
from agent_pay.node.node import Node
from agent_pay.signing import LocalSigner
from agent_pay.stack import FACILITATOR_INDEX, Stack
from agent_pay.wallet import create_keystore

PASSWORD = "correct horse battery"
CHEAP = 2**4  # scrypt cost for test keystores: fast, and still a real keystore


@dataclass
class World:
    node_url: str
    server_url: str
    stack: Stack


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with Node.open(None) as node, node.serve(port=0) as url, JsonRpcChain(url) as chain:
        stack = Stack.connect(
            chain, find_stablecoins(chain), Transactor(chain, dev_account(FACILITATOR_INDEX))
        )
        with stack.serve() as server_url:
            yield World(url, server_url, stack)


@pytest.fixture
def env(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean working directory and environment pointing at the node; returns the directory."""
    for name in list(os.environ):
        if name.startswith("AGENT_PAY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENT_PAY_CHAIN_URL", world.node_url)
    monkeypatch.setenv("AGENT_PAY_KEYSTORE_PASSWORD", PASSWORD)
    return tmp_path


def wallet(world: World, directory: Path, usdx: str = "1") -> LocalSigner:
    """A cheap keystore at the default path, holding `usdx`."""
    signer = create_keystore(directory / ".agent-pay/wallet.json", PASSWORD, iterations=CHEAP)
    if usdx != "0":
        world.stack.fund(signer.address, "USDX", usdx)
    return signer


def url(world: World, slug: str) -> str:
    return f"{world.server_url}/articles/{slug}"


# -- usage -----------------------------------------------------------------------------------


def test_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    for command in ("node", "serve", "facilitator", "deploy", "fund", "read", "wallet", "demo"):
        assert command in capsys.readouterr().out or main([command, "--help"]) == 0
    assert main(["no-such-command"]) == 1
    assert main(["read"]) == 1  # a URL is required
    assert "usage:" in capsys.readouterr().err


# -- deploy and fund -------------------------------------------------------------------------


def test_deploy_on_a_fresh_anvil_then_again(
    anvil_url: str, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["deploy", "--chain", anvil_url]) == 0
    out = capsys.readouterr().out
    assert "deployed on chain 31337" in out
    for symbol, address in DEV_TOKEN_ADDRESSES.items():
        assert f"{symbol} {address}" in out

    assert main(["deploy", "--chain", anvil_url]) == 0
    assert "already deployed" in capsys.readouterr().out


def test_fund_mints_and_sends_gas_money(
    world: World, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = Account.create().address

    assert main(["fund", holder, "2.5", "--token", "USDX"]) == 0
    assert main(["fund", holder, "0.5", "--token", "ETH"]) == 0

    out = capsys.readouterr().out
    assert f"minted 2.5 USDX to {holder}" in out
    assert "now holds 2.5 USDX" in out
    assert world.stack.balance(holder, "USDX") == 2_500_000
    assert world.stack.chain.get_balance(holder) == 5 * 10**17


def test_fund_refuses_what_it_cannot_do(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    holder = Account.create().address
    assert main(["fund", holder, "1", "--token", "XYZ"]) == 1
    assert "unknown token 'XYZ'" in capsys.readouterr().err
    assert main(["fund", holder, "0.0000001", "--token", "USDX"]) == 1
    assert "finer than 6 decimals" in capsys.readouterr().err
    assert main(["fund", "0xnot-an-address", "1", "--token", "USDX"]) == 1
    assert main(["fund", holder, "1", "--token", "USDX", "--chain", "http://127.0.0.1:1"]) == 1
    assert "unreachable" in capsys.readouterr().err


# -- wallet ----------------------------------------------------------------------------------


def test_wallet_new_writes_an_encrypted_owner_only_keystore_once(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["wallet", "new", "--keystore", "agent.json"]) == 0
    address = capsys.readouterr().out.strip().splitlines()[-1]
    keystore = env / "agent.json"
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
    document = json.loads(keystore.read_text())
    assert document["address"].lower() == address[2:].lower()
    assert PASSWORD not in keystore.read_text()

    assert main(["wallet", "new", "--keystore", "agent.json"]) == 1
    assert "not overwriting" in capsys.readouterr().err


def test_wallet_address_and_balance(
    world: World, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = wallet(world, env, usdx="1.25")

    assert main(["wallet", "address"]) == 0
    assert capsys.readouterr().out.strip() == signer.address
    assert main(["wallet", "balance"]) == 0
    out = capsys.readouterr().out
    assert "USDX  1.25" in out
    assert "CNYX  0" in out
    assert main(["wallet", "balance", dev_account(1).address]) == 0


def test_a_wrong_password_is_a_clear_error(
    world: World, env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wallet(world, env, usdx="0")
    monkeypatch.setenv("AGENT_PAY_KEYSTORE_PASSWORD", "not the password")
    assert main(["wallet", "address"]) == 1
    err = capsys.readouterr().err
    assert "wrong password" in err
    assert "Traceback" not in err


# -- read ------------------------------------------------------------------------------------


def test_read_pays_and_prints_the_article(
    world: World, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = wallet(world, env)
    article = world.stack.catalogue.get("why-micropayments-failed")
    assert article is not None

    code = main(["read", url(world, article.slug), "--max-price", "0.2", "--budget", "1"])

    out, err = capsys.readouterr()
    assert code == 0
    assert article.body in out
    assert f"paid 0.1 USDX to {article.author}" in err
    assert world.stack.balance(signer.address, "USDX") == 900_000


def test_read_refuses_over_the_price_cap_and_signs_nothing(
    world: World, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = wallet(world, env)
    code = main(
        ["read", url(world, "reading-a-vyper-contract"), "--max-price", "0.2", "--budget", "1"]
    )
    assert code == 2
    assert "exceeds the per-payment cap of 0.2 USDX" in capsys.readouterr().err
    assert world.stack.balance(signer.address, "USDX") == 1_000_000


def test_read_stops_when_the_budget_runs_out(
    world: World, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = wallet(world, env)
    urls = [
        url(world, s)
        for s in ("http-status-codes-nobody-uses", "pricing-content-for-machine-readers")
    ]

    assert main(["read", *urls, "--max-price", "0.1", "--budget", "0.15"]) == 2

    err = capsys.readouterr().err
    assert "paid 0.1 USDX" in err
    assert "remaining budget" in err
    assert world.stack.balance(signer.address, "USDX") == 900_000


def test_read_reports_a_refused_payment(
    world: World, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = wallet(world, env, usdx="0.05")
    code = main(
        ["read", url(world, "why-micropayments-failed"), "--max-price", "1", "--budget", "1"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "refused the payment" in err
    assert "nothing was charged" in err
    assert world.stack.balance(signer.address, "USDX") == 50_000


def test_read_pays_only_in_the_tokens_named(
    world: World, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wallet(world, env)
    code = main(
        [
            "read",
            url(world, "why-micropayments-failed"),
            "--max-price",
            "1",
            "--budget",
            "1",
            "--token",
            "CNYX",
        ]
    )
    assert code == 2
    assert "no offer is payable" in capsys.readouterr().err


def test_read_needs_limits_a_key_and_a_node(
    world: World, env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = url(world, "why-micropayments-failed")
    assert main(["read", target]) == 1
    assert "--max-price" in capsys.readouterr().err
    assert main(["read", target, "--max-price", "1", "--budget", "1"]) == 1
    assert "agent-pay wallet new" in capsys.readouterr().err
    monkeypatch.setenv("AGENT_PAY_PRIVATE_KEY", "0x" + "11" * 32)
    dead = f"http://127.0.0.1:{free_port()}"
    assert main(["read", target, "--max-price", "1", "--budget", "1", "--chain", dead]) == 1
    assert "unreachable" in capsys.readouterr().err
