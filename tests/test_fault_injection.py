"""The server process SIGKILLed at every step of the payment path, restarted, the client retrying.

The chain must outlive the server, so it is a real node: `agent-pay node` (the embedded chain
over JSON-RPC, kept in a data directory) running in this test process. The content server runs
as its own process (tests/fault_server.py: `Stack.connect` on the node, a file ledger in a data
directory, a fixed receipt key) with a `FaultPlan` that SIGKILLs it at one step. Each run:

    start the server (kill at STEP) → the client pays → the server dies (SIGKILL, exit -9)
    → restart the server (no fault; it reconciles its ledger before serving)
    → the client retries → 200, the article

and every run ends with exactly one debit of the price, total supply unchanged, and the
ledger equal to the chain. Half the runs retry by hand with the very same header; the other
half use `PaymentAuth` with a receipt store on disk, which resends its pending payment itself.
A last test stops the node under a running server and restarts it: 503 meanwhile, then the
same server serves again by itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.chain.stablecoin import Stablecoin
from agent_pay.client.auth import PaymentAuth
from agent_pay.client.policy import SpendingPolicy
from agent_pay.client.receipts import ReceiptStore
from agent_pay.node.anvil import free_port
from agent_pay.node.deployment import find_stablecoins
from agent_pay.node.node import Node
from agent_pay.protocol import PaymentRequired, SettleResponse
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)
from agent_pay.server.faults import FaultPoint
from agent_pay.server.ledger import Ledger, PaymentState
from agent_pay.signing import LocalSigner
from tests._money import assert_ledger_matches_chain, books, delta

pytestmark = pytest.mark.slow

SERVER_SCRIPT = Path(__file__).with_name("fault_server.py")
ROOT = Path(__file__).resolve().parents[1]
SLUG = "why-micropayments-failed"  # 0.1 USDX to Ada Marsh
AUTHOR = "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955"
PRICE = 100_000
RECEIPT_KEY = LocalSigner.random().unsafe_export_private_key().hex()


@dataclass
class Chain:
    url: str
    rpc: JsonRpcChain
    tokens: dict[str, Stablecoin]
    owner: Transactor
    node: Node
    serving: object  # the node's serve() context, to stop it
    port: int
    directory: Path


def start_node(directory: Path, port: int) -> tuple[Node, object, str]:
    node = Node.open(directory)
    serving = node.serve("127.0.0.1", port)
    url = serving.__enter__()
    return node, serving, url


def stop_node(node: Node, serving: object) -> None:
    serving.__exit__(None, None, None)  # type: ignore[attr-defined]
    node.close()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    directory = tmp_path_factory.mktemp("node")
    port = free_port()
    node, serving, url = start_node(directory, port)
    rpc = JsonRpcChain(url)
    tokens = find_stablecoins(rpc)
    handle = Chain(url, rpc, tokens, Transactor(rpc, dev_signer(0)), node, serving, port, directory)
    try:
        yield handle
    finally:
        rpc.close()
        stop_node(handle.node, handle.serving)


class Server:
    """The content server as a child process on a fixed port and data directory."""

    def __init__(self, chain: Chain, data_dir: Path) -> None:
        self.chain = chain
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, kill_at: FaultPoint | None = None) -> None:
        args = [
            sys.executable,
            str(SERVER_SCRIPT),
            "--chain",
            self.chain.url,
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--receipt-key",
            RECEIPT_KEY,
        ]
        if kill_at is not None:
            args += ["--kill-at", str(kill_at)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(  # noqa: S603 - our own script
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"the server exited at start: {stderr[-2000:]}")
            try:
                if httpx.get(self.url + "/", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)

    def wait_killed(self) -> None:
        assert self.process is not None
        code = self.process.wait(timeout=20)
        assert code == -signal.SIGKILL, f"the server exited with {code}, not SIGKILL"
        self._close()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close()

    def _close(self) -> None:
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None


@pytest.fixture(scope="module")
def server(chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server data directory for the whole module: its ledger accumulates every run."""
    server = Server(chain, tmp_path_factory.mktemp("server"))
    try:
        yield server
    finally:
        server.stop()


def new_reader(chain: Chain) -> LocalSigner:
    signer = LocalSigner.random()
    receipt = chain.tokens["USDX"].mint(chain.owner, signer.address, 1_000_000)
    assert receipt.status
    return signer


def check_ledger(server: Server, chain: Chain) -> dict[PaymentState, int]:
    """The ledger (the server is stopped) agrees with the chain, entry by entry."""
    with Ledger.open(server.data_dir) as ledger:
        return assert_ledger_matches_chain(ledger, chain.rpc, chain.tokens)


RUNS = [(point, client) for point in FaultPoint for client in ("same-header", "payment-auth")]


@pytest.mark.parametrize(("point", "client"), RUNS, ids=[f"{p}-{c}" for p, c in RUNS])
def test_killed_at_any_step_the_retry_reads_and_pays_once(
    chain: Chain, server: Server, point: FaultPoint, client: str, tmp_path: Path
) -> None:
    reader = new_reader(chain)
    parties = [reader.address, AUTHOR]
    usdx = chain.tokens["USDX"].asset
    auth = PaymentAuth(
        reader,
        SpendingPolicy.per_token([usdx], max_per_payment="1", budget="1"),
        receipts=ReceiptStore.open(tmp_path),
    )
    url = f"{server.url}/articles/{SLUG}"
    before = books(chain.tokens, parties)

    server.start(kill_at=point)
    with httpx.Client(timeout=20) as http:
        required = decode_header(http.get(url).headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
        header = encode_header(auth.sign(required.accepts[0], required))
        # By hand: the signed header itself; with PaymentAuth: it signs, records, sends.
        by_hand = client == "same-header"
        with pytest.raises(httpx.TransportError):  # the server died mid-request
            http.get(
                url,
                headers={PAYMENT_SIGNATURE_HEADER: header} if by_hand else None,
                auth=None if by_hand else auth,
            )
    server.wait_killed()

    server.start()  # reconciles what the crash left before serving
    try:
        with httpx.Client(timeout=20) as http:
            if client == "same-header":
                response = http.get(url, headers={PAYMENT_SIGNATURE_HEADER: header})
            else:
                response = http.get(url, auth=auth)  # resends its pending header by itself
    finally:
        server.stop()

    assert response.status_code == 200, response.text
    assert response.json()["complete"] is True
    settled = decode_header(response.headers[PAYMENT_RESPONSE_HEADER], SettleResponse)
    assert settled.payer == reader.address
    assert delta(before, books(chain.tokens, parties)) == {
        (reader.address, "USDX"): -PRICE,
        (AUTHOR, "USDX"): PRICE,
    }  # one debit; total supply unchanged
    if client == "payment-auth":
        assert auth.spending.spent(usdx) == PRICE
        assert [p.transaction for p in auth.payments] == [settled.transaction]
        assert auth.receipts.all_pending() == []
    auth.receipts.close()
    counts = check_ledger(server, chain)
    assert counts[PaymentState.VERIFIED] == counts[PaymentState.SETTLING] == 0


def test_the_node_stops_and_returns_under_a_running_server(chain: Chain, server: Server) -> None:
    reader = new_reader(chain)
    url = f"{server.url}/articles/{SLUG}"
    signer_auth = PaymentAuth(
        reader,
        SpendingPolicy.per_token([chain.tokens["USDX"].asset], max_per_payment="1", budget="1"),
    )
    server.start()
    try:
        with httpx.Client(timeout=30) as http:
            required = decode_header(
                http.get(url).headers[PAYMENT_REQUIRED_HEADER], PaymentRequired
            )
            header = encode_header(signer_auth.sign(required.accepts[0], required))
            before = books(chain.tokens, [reader.address, AUTHOR])
            stop_node(chain.node, chain.serving)
            try:
                down = http.get(url, headers={PAYMENT_SIGNATURE_HEADER: header})
                assert down.status_code == 503
                assert down.headers["Retry-After"]
                assert "content" not in down.json()
            finally:
                chain.node, chain.serving, _ = start_node(chain.directory, chain.port)
            back = http.get(url, headers={PAYMENT_SIGNATURE_HEADER: header})
    finally:
        server.stop()
    assert back.status_code == 200, back.text
    assert delta(before, books(chain.tokens, [reader.address, AUTHOR])) == {
        (reader.address, "USDX"): -PRICE,
        (AUTHOR, "USDX"): PRICE,
    }
    check_ledger(server, chain)
