"""The `agent-pay` command, run in-process (`main([...])`) against a node and a server on
127.0.0.1: what it prints, and its exit codes (0 done, 2 payment refused or a usage error, 1
anything else). `test_cli_usage.py` runs it as a subprocess, the way a user types it."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from eth_account import Account

from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_account, dev_signer
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.cli import main
from agent_pay.node.anvil import free_port, stop_process
from agent_pay.node.deployment import (
    DEV_CHANNEL_MANAGER_ADDRESS,
    DEV_TOKEN_ADDRESSES,
    find_stablecoins,
)
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
            chain, find_stablecoins(chain), Transactor(chain, dev_signer(FACILITATOR_INDEX))
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
    monkeypatch.setenv("AGENT_PAY_HOME", str(tmp_path / ".agent-pay"))
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
    assert main(["no-such-command"]) == 2
    assert main(["read"]) == 2  # a URL is required
    err = capsys.readouterr().err
    assert "agent-pay read: the following arguments are required: URL" in err
    assert "Traceback" not in err


# -- deploy and fund -------------------------------------------------------------------------


def test_deploy_on_a_fresh_anvil_then_again(
    anvil_url: str, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["deploy", "--chain", anvil_url]) == 0
    out = capsys.readouterr().out
    assert "deployed on chain 31337" in out
    for symbol, address in DEV_TOKEN_ADDRESSES.items():
        assert f"{symbol} {address}" in out
    assert f"channels {DEV_CHANNEL_MANAGER_ADDRESS} (grace period 1 day)" in out
    assert "not at the default" not in out

    assert main(["deploy", "--chain", anvil_url]) == 0
    out = capsys.readouterr().out
    assert "stablecoins already deployed" in out
    assert f"channels {DEV_CHANNEL_MANAGER_ADDRESS} (grace period 1 day), already" in out


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
    assert main(["fund", holder, "1", "--token", "XYZ"]) == 2
    assert "unknown token 'XYZ'" in capsys.readouterr().err
    assert main(["fund", holder, "0.0000001", "--token", "USDX"]) == 2
    assert "finer than 6 decimals" in capsys.readouterr().err
    assert main(["fund", "0xnot-an-address", "1", "--token", "USDX"]) == 2
    assert main(["fund", holder, "1", "--token", "USDX", "--chain", "http://127.0.0.1:1"]) == 1
    assert "no node answers at" in capsys.readouterr().err


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
    assert main(["wallet", "address"]) == 0  # the address is public: no password needed
    capsys.readouterr()
    assert (
        main(["read", url(world, "why-micropayments-failed"), "--max-price", "1", "--budget", "1"])
        == 1
    )
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


def test_the_budget_holds_across_runs_of_read(
    world: World, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = wallet(world, env)
    limits = ["--max-price", "0.1", "--budget", "0.15"]
    assert main(["read", url(world, "http-status-codes-nobody-uses"), *limits]) == 0
    # A second run, a new process as far as the budget knows: 0.05 is left, not 0.15.
    assert main(["read", url(world, "pricing-content-for-machine-readers"), *limits]) == 2
    assert "remaining budget of 0.05 USDX" in capsys.readouterr().err
    assert world.stack.balance(signer.address, "USDX") == 900_000
    assert (env / ".agent-pay/receipts/spending.sqlite").is_file()


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
    assert main(["read", target]) == 2
    assert "--max-price" in capsys.readouterr().err
    assert main(["read", target, "--max-price", "1", "--budget", "1"]) == 1
    assert "agent-pay wallet new" in capsys.readouterr().err
    monkeypatch.setenv("AGENT_PAY_PRIVATE_KEY", "0x" + "11" * 32)
    dead = f"http://127.0.0.1:{free_port()}"
    assert main(["read", target, "--max-price", "1", "--budget", "1", "--chain", dead]) == 1
    assert "no node answers at" in capsys.readouterr().err


# -- serve and read by payment channel -------------------------------------------------------

SERVER_GAS_INDEX = 6  # the subprocess server's own gas payer: no nonce shared with `world`


def test_serve_offers_only_what_it_can_settle(
    world: World, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--schemes", "exact,bogus"]) == 2
    assert "unknown scheme(s) bogus" in capsys.readouterr().err
    remote = ["serve", "--schemes", "channel", "--facilitator-url", "http://127.0.0.1:1"]
    assert main(remote) == 1  # the facilitator keeps the channels: it must answer
    assert "facilitator unreachable" in capsys.readouterr().err
    not_channels = ["--channel-manager", DEV_TOKEN_ADDRESSES["USDX"]]
    assert main(["serve", "--schemes", "channel", *not_channels]) == 1
    assert "not an agent-pay channel contract" in capsys.readouterr().err


@pytest.mark.slow
def test_read_pays_by_channel_and_serve_claims_on_sigterm(
    world: World, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wallet(world, env, usdx="2")
    first, second = (
        world.stack.catalogue.get(s)
        for s in ("http-status-codes-nobody-uses", "pricing-content-for-machine-readers")
    )
    assert first is not None
    assert second is not None
    payee, price = first.author, first.price_atomic("USDX", 6)
    assert (second.author, second.price_atomic("USDX", 6)) == (payee, price)
    port = free_port()
    server_url = f"http://127.0.0.1:{port}"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_PAY_")}
    gas_key = "0x" + bytes(dev_account(SERVER_GAS_INDEX).key).hex()
    serve = ["serve", "--chain", world.node_url, "--port", str(port), "--schemes", "exact,channel"]
    server = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "agent_pay.cli", *serve],
        cwd=env,
        env={
            **environ,
            "AGENT_PAY_FACILITATOR_KEY": gas_key,
            "AGENT_PAY_HOME": str(env / ".agent-pay"),
        },
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_for_http(f"{server_url}/articles", server)
        before = world.stack.balance(payee)
        read = ["--max-price", "0.2", "--budget", "1", "--channel-deposit", "1"]

        assert main(["read", f"{server_url}/articles/{first.slug}", *read]) == 0
        first_err = capsys.readouterr().err
        opened = re.search(
            r"voucher on channel (0x[0-9a-f]{64}), opened by deposit tx 0x", first_err
        )
        assert opened is not None
        with JsonRpcChain(world.node_url) as chain:
            block = chain.block_number()
            assert main(["read", f"{server_url}/articles/{second.slug}", *read]) == 0
            assert chain.block_number() == block  # a voucher: no transaction
        out, err = capsys.readouterr()
        assert f"paid 0.1 USDX to {payee} (voucher on channel {opened[1]}, no transaction)" in err
        assert second.title in out
        assert world.stack.balance(payee) == before  # nothing claimed yet

        server.send_signal(signal.SIGTERM)
        stdout, stderr = server.communicate(timeout=30)
        assert server.returncode == 0, stderr.decode()
        printed = stdout.decode()
        assert "schemes     exact, channel" in printed
        assert "claimed 1 channel(s)" in printed
        assert world.stack.balance(payee) - before == 2 * price  # the last vouchers, claimed
        assert (env / ".agent-pay/server/channels/channels.sqlite").is_file()
        assert main(["channels", "list"]) == 0
        listed = capsys.readouterr().out
        assert f"{opened[1]}  [open]" in listed
        assert f"payee     {payee}" in listed
        claimed = format(price * 2 / 10**6, "g")
        assert f"on chain  open, deposit 1 USDX, claimed {claimed} USDX" in listed
    finally:
        stop_process(server)


def wait_for_http(url: str, child: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            _, err = child.communicate()
            raise AssertionError(f"{child.args!r} exited: {err.decode(errors='replace')}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not come up")
