"""`agent-pay serve` (a real process) while its node is down: it starts, serves free previews as
402, answers paid reads 503 with Retry-After, and once the node is up takes payment with no
restart."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.client.auth import PaymentAuth
from agent_pay.client.policy import SpendingPolicy
from agent_pay.errors import NoAcceptableOfferError
from agent_pay.node.anvil import free_port, stop_process
from agent_pay.node.deployment import find_stablecoins
from agent_pay.node.node import Node
from agent_pay.protocol import PaymentRequired
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
)
from agent_pay.signing import LocalSigner
from agent_pay.stack import FACILITATOR_INDEX, Stack

SLUG = "why-micropayments-failed"


@pytest.mark.slow
def test_serve_starts_without_its_node_and_sells_once_it_is_back(tmp_path: Path) -> None:
    node_port, serve_port = free_port(), free_port()
    node_url, base = f"http://127.0.0.1:{node_port}", f"http://127.0.0.1:{serve_port}"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_PAY_")}
    log = (tmp_path / "serve.out").open("wb")
    server = subprocess.Popen(  # noqa: S603 - our own CLI
        [
            sys.executable,
            "-m",
            "agent_pay.cli",
            "serve",
            "--chain",
            node_url,
            "--port",
            str(serve_port),
            "--server-dir",
            str(tmp_path / "server"),
        ],
        cwd=tmp_path,
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "serve.out").read_text()
            try:
                listing = httpx.get(f"{base}/articles", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "serve did not come up without its node"
                time.sleep(0.1)
        assert listing.status_code == 200
        assert len(listing.json()["articles"]) == 8

        preview = httpx.get(f"{base}/articles/{SLUG}")
        assert preview.status_code == 402
        assert preview.json()["content"]
        assert preview.json()["complete"] is False
        assert preview.json()["error"] == "chain_unavailable"
        assert preview.headers["Retry-After"]
        required = decode_header(preview.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
        assert required.accepts == []

        some_payment = base64.b64encode(b'{"x402Version": 2}').decode()
        paid = httpx.get(
            f"{base}/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: some_payment}
        )
        assert paid.status_code == 503
        assert int(paid.headers["Retry-After"]) > 0
        assert paid.json()["error"] == "chain_unavailable"

        with Node.open(None) as node, node.serve(port=node_port), JsonRpcChain(node_url) as chain:
            funder = Stack.connect(
                chain, find_stablecoins(chain), Transactor(chain, dev_signer(FACILITATOR_INDEX))
            )
            signer = LocalSigner.random()
            funder.fund(signer.address, "USDX", "1")
            usdx = funder.tokens["USDX"].asset
            auth = PaymentAuth(
                signer, SpendingPolicy.per_token([usdx], max_per_payment="1", budget="1")
            )
            deadline = time.monotonic() + 30
            with httpx.Client(base_url=base, auth=auth, timeout=30) as http:
                while True:  # the server retries its chain every 2 s, as requests come
                    try:
                        answer = http.get(f"/articles/{SLUG}")
                    except NoAcceptableOfferError:  # still the standby 402: nothing to pay yet
                        assert time.monotonic() < deadline, "the server never took payment"
                        time.sleep(0.5)
                        continue
                    if answer.status_code == 200 or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
            assert answer.status_code == 200, answer.text
            assert answer.json()["complete"] is True
            assert funder.balance(signer.address) == 10**6 - 10**5  # paid 0.1 USDX, once
            assert server.poll() is None  # the same process throughout
    finally:
        stop_process(server)
        log.close()
    out = (tmp_path / "serve.out").read_text()
    assert "chain       unavailable" in out
    assert "schemes     exact" in out  # printed once the chain answered
