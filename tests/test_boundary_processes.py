"""Every guarantee at the boundary, proved with real processes and stock clients.

One chain (`agent-pay node`, a data directory), one facilitator service (`agent-pay
facilitator`) and two content servers (`agent-pay serve`, each its own --server-dir): server A
settles itself, server B settles through the facilitator. A and the facilitator are forced onto
the SAME gas key (AGENT_PAY_FACILITATOR_KEY = dev account #1), so that both send transactions
from one account at once, the nonce clash the issue reported.

The payers are the stock x402 Python client (`x402HttpxClient`), which pays once and never
retries. What is proved, from chain balances and the clients' own answers:

- paid means delivered: every payer is debited (exactly the price) if and only if its read
  answered 200, after the reads and again after a grace period for reconciliation; with the
  node SIGKILLed and restarted mid-run, a non-200 read is debited only if the server's ledger
  held its transaction hash (written before broadcast) when the client had its answer;
- one payment reads one article, for its payer: a third party rebuilds a settled payment header
  from the settlement transaction's calldata on chain; A and B refuse it for the same and for
  another article (same payee and price): 402, preview only, no second debit;
- the stock client's sign-in-with-x re-reads for free and its payment-identifier retry is
  charged once, against a real server process.

Everything listens on 127.0.0.1; every process is stopped at the end, pass or fail.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from x402 import x402Client
from x402.http.clients.httpx import x402HttpxClient
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner

from agent_pay.chain.contract import Transactor
from agent_pay.chain.dev_roles import DEPLOYER_INDEX, FACILITATOR_INDEX
from agent_pay.chain.devkeys import dev_account, dev_signer
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.chain.stablecoin import Stablecoin
from agent_pay.errors import Reason
from agent_pay.node.anvil import free_port, stop_process, wait_for_rpc
from agent_pay.node.deployment import find_stablecoins
from agent_pay.protocol import PaymentRequired, SettleResponse
from agent_pay.protocol.codec import PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER, decode_header
from agent_pay.server.catalogue import Catalogue
from agent_pay.stack import sample_articles_dir

pytestmark = pytest.mark.slow

SLUG = "why-micropayments-failed"  # 0.1 USDX to 0x14dC...
TWIN = "the-same-offer"  # added to both catalogues: 0.1 USDX to the same author, the same offer
VYPER = "reading-a-vyper-contract"  # 0.25 USDX
PRICES = {SLUG: 100_000, TWIN: 100_000, VYPER: 250_000}
SHARED_KEY = "0x" + bytes(dev_account(FACILITATOR_INDEX).key).hex()  # serve's default (#1)
GRACE = 7.0  # reconciliation passes run every 5 s while something is unresolved


# -- processes ---------------------------------------------------------------------------------


class Processes:
    """`agent-pay` subcommands as child processes, logging to files; all stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[subprocess.Popen[bytes]] = []
        self.environ = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_PAY_")}
        self.environ["AGENT_PAY_HOME"] = str(workdir / "home")

    def start(self, name: str, args: Sequence[str], **env: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        child = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "agent_pay.cli", *args],
            cwd=self.workdir,
            env={**self.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.children.append(child)
        return child

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for child in reversed(self.children):
            stop_process(child, timeout=10)


def wait_for_http(url: str, child: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert child.poll() is None, f"{child.args!r} exited with {child.returncode}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


@dataclass
class Cluster:
    """node + facilitator + server A (settles itself) + server B (through the facilitator)."""

    processes: Processes
    node_port: int
    node_dir: Path
    node: subprocess.Popen[bytes]
    a_url: str
    b_url: str
    a_dir: Path
    b_dir: Path
    chain: JsonRpcChain
    usdx: Stablecoin
    owner: Transactor
    catalogue: Catalogue
    servers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def node_url(self) -> str:
        return f"http://127.0.0.1:{self.node_port}"

    def start_node(self) -> None:
        self.node = self.processes.start(
            "node", ["node", "--port", str(self.node_port), "--data-dir", str(self.node_dir)]
        )
        wait_for_rpc(self.node_url, timeout=60, process=self.node)

    def funded(self, count: int, amount: int = 1_000_000) -> list[LocalAccount]:
        accounts: list[LocalAccount] = [Account.create() for _ in range(count)]
        self.usdx.mint_many(self.owner, [(a.address, amount) for a in accounts])
        return accounts

    def balances(self, accounts: Sequence[LocalAccount]) -> dict[str, int]:
        return {a.address: self.usdx.balance_of(a.address) for a in accounts}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("boundary")
    processes = Processes(workdir)
    node_port, facilitator_port, a_port, b_port = (free_port() for _ in range(4))
    articles = workdir / "articles"
    shutil.copytree(sample_articles_dir(), articles)
    text = (articles / f"{SLUG}.md").read_text()
    (articles / f"{TWIN}.md").write_text(text.replace("title: ", "title: Twin of ", 1))
    try:
        node = processes.start(
            "node", ["node", "--port", str(node_port), "--data-dir", str(workdir / "node")]
        )
        node_url = f"http://127.0.0.1:{node_port}"
        wait_for_rpc(node_url, timeout=60, process=node)
        facilitator_url = f"http://127.0.0.1:{facilitator_port}"
        facilitator = processes.start(
            "facilitator",
            ["facilitator", "--chain", node_url, "--port", str(facilitator_port)],
            AGENT_PAY_FACILITATOR_KEY=SHARED_KEY,  # forced onto serve A's key
        )
        common = ["serve", "--chain", node_url, "--schemes", "exact", "--articles", str(articles)]
        a = processes.start(
            "serve-a",
            [*common, "--port", str(a_port), "--server-dir", str(workdir / "a")],
            AGENT_PAY_FACILITATOR_KEY=SHARED_KEY,
        )
        b = processes.start(
            "serve-b",
            [
                *common,
                "--port",
                str(b_port),
                "--server-dir",
                str(workdir / "b"),
                "--facilitator-url",
                facilitator_url,
            ],
        )
        wait_for_http(f"{facilitator_url}/supported", facilitator)
        a_url, b_url = f"http://127.0.0.1:{a_port}", f"http://127.0.0.1:{b_port}"
        wait_for_http(f"{a_url}/articles", a)
        wait_for_http(f"{b_url}/articles", b)
        with JsonRpcChain(node_url, timeout=30) as chain:
            yield Cluster(
                processes,
                node_port,
                workdir / "node",
                node,
                a_url,
                b_url,
                workdir / "a",
                workdir / "b",
                chain,
                find_stablecoins(chain)["USDX"],
                Transactor(chain, dev_signer(DEPLOYER_INDEX)),
                Catalogue.from_directory(articles),
                {"a": a, "b": b, "facilitator": facilitator},
            )
    finally:
        processes.stop_all()


# -- the stock client --------------------------------------------------------------------------


def stock_client(cluster: Cluster, account: LocalAccount) -> x402Client:
    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(account), networks="eip155:*")
    usdx = cluster.usdx.asset
    client.set_spend_controls(
        {
            "allowed_assets": [
                {"network": usdx.network, "asset": usdx.address, "max_amount_per_payment": "300000"}
            ]
        }
    )
    return client


@dataclass
class Outcome:
    """What one stock client saw: a status (or the exception it raised) and when."""

    payer: str
    server: str
    slug: str
    status: int | None
    error: str | None
    answered_at: float
    body: dict[str, Any] | None = None
    transaction: str | None = None  # from PAYMENT-RESPONSE


async def stock_read(
    cluster: Cluster, account: LocalAccount, server: str, slug: str, delay: float = 0.0
) -> Outcome:
    await asyncio.sleep(delay)
    base = cluster.a_url if server == "a" else cluster.b_url
    try:
        async with x402HttpxClient(
            stock_client(cluster, account), base_url=base, timeout=60
        ) as http:
            response = await http.get(f"/articles/{slug}")
    except Exception as exc:  # the stock client raises on some failures: not a 200 either
        return Outcome(account.address, server, slug, None, repr(exc), time.time())
    answered_at = time.time()
    try:
        body = response.json()
    except ValueError:
        body = None
    settled = response.headers.get(PAYMENT_RESPONSE_HEADER)
    transaction = decode_header(settled, SettleResponse).transaction if settled else None
    return Outcome(
        account.address, server, slug, response.status_code, None, answered_at, body, transaction
    )


def debits(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {a: before[a] - after[a] for a in before}


def check_paid_iff_200(
    cluster: Cluster, outcomes: Sequence[Outcome], debited: dict[str, int]
) -> list[Outcome]:
    """Every 200 was debited exactly its price and carries the whole article; returns the
    outcomes that were not 200 but were debited (each must then be explained)."""
    charged_without_200 = []
    for outcome in outcomes:
        if outcome.status == 200:
            assert debited[outcome.payer] == PRICES[outcome.slug], outcome
            assert outcome.body is not None
            assert outcome.body["complete"] is True
            article = cluster.catalogue.get(outcome.slug)
            assert article is not None
            assert outcome.body["content"] == article.body
        else:
            assert debited[outcome.payer] in (0, PRICES[outcome.slug]), outcome
            if debited[outcome.payer]:
                charged_without_200.append(outcome)
    return charged_without_200


def poke(cluster: Cluster, seconds: float) -> None:
    """Let reconciliation run: it is started by requests, so ask for previews meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for base in (cluster.a_url, cluster.b_url):
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"{base}/articles/{SLUG}", timeout=5)
        time.sleep(0.5)


def ledger_rows(server_dir: Path) -> dict[str, tuple[str, str | None, float]]:
    """payer -> (state, tx_hash, updated_at), read while the server runs (WAL: a reader)."""
    uri = f"file:{server_dir / 'ledger.sqlite'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        rows = db.execute("SELECT payer, state, tx_hash, updated_at FROM payments").fetchall()
    return {payer: (state, tx, updated) for payer, state, tx, updated in rows}


# -- a. stock clients that never retry, two senders of one gas key -----------------------------

READERS = 24


def test_stock_clients_are_charged_only_for_a_200_under_a_shared_gas_key(
    cluster: Cluster,
) -> None:
    payers = cluster.funded(READERS)
    before = cluster.balances(payers)
    plan = [
        (payer, "a" if i % 2 == 0 else "b", (SLUG, VYPER)[(i // 2) % 2])
        for i, payer in enumerate(payers)
    ]

    async def run() -> list[Outcome]:
        # Spread over ~2 s, A and B in turn, so that both processes send all along.
        reads = (
            stock_read(cluster, p, s, slug, i // 2 * 0.15) for i, (p, s, slug) in enumerate(plan)
        )
        return await asyncio.gather(*reads)

    outcomes = asyncio.run(run())
    debited = debits(before, cluster.balances(payers))
    statuses = sorted(str(o.status or o.error) for o in outcomes)
    assert check_paid_iff_200(cluster, outcomes, debited) == [], statuses
    poke(cluster, GRACE)
    assert debits(before, cluster.balances(payers)) == debited  # reconciliation charged nothing

    ok = [o for o in outcomes if o.status == 200]
    assert len(ok) == READERS, statuses  # a nonce clash is resolved inside the request
    # Both processes really sent from the one key, interleaved on its one nonce sequence.
    sent = []
    for outcome in ok:
        tx = rpc(cluster, "eth_getTransactionByHash", outcome.transaction)
        assert tx["from"].lower() == dev_account(FACILITATOR_INDEX).address.lower()
        sent.append((int(tx["nonce"], 16), outcome.server))
    order = [server for _, server in sorted(sent)]
    switches = sum(1 for x, y in itertools.pairwise(order) if x != y)
    assert set(order) == {"a", "b"}, order
    assert switches >= 2, order
    print(
        f"\nshared gas key: {len(ok)}/{READERS} stock reads 200, each debited once; 0 charged "
        f"without a 200, after {GRACE:.0f} s grace too; A/B alternate {switches} times on the "
        "key's nonces"
    )


# -- c. a third party replays a settled payment rebuilt from the chain ---------------------------


def rpc(cluster: Cluster, method: str, *params: Any) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    answer = httpx.post(cluster.node_url, json=body, timeout=10).json()
    assert "error" not in answer, answer
    return answer["result"]


def header_from_calldata(cluster: Cluster, tx_hash: str, slug: str, base: str) -> str:
    """What someone watching the chain can build: the authorization from the settlement's
    calldata, the offer from a fresh 402 of the server it targets."""
    tx = rpc(cluster, "eth_getTransactionByHash", tx_hash)
    data = bytes.fromhex(tx["input"][2:])
    frm, to, value, after, before, nonce, v, r, s = abi_decode(
        [
            "address",
            "address",
            "uint256",
            "uint256",
            "uint256",
            "bytes32",
            "uint8",
            "bytes32",
            "bytes32",
        ],
        data[4:],
    )
    required = decode_header(
        httpx.get(f"{base}/articles/{slug}", timeout=10).headers[PAYMENT_REQUIRED_HEADER],
        PaymentRequired,
    )
    accepted = required.accepts[0].to_wire()  # the very offer the authorization pays
    assert (accepted["asset"], accepted["payTo"], accepted["amount"]) == (
        _checksum(tx["to"]),
        _checksum(to),
        str(value),
    )
    payload = {
        "x402Version": 2,
        "resource": required.resource.to_wire() if required.resource else None,
        "accepted": accepted,
        "payload": {
            "signature": "0x" + (r + s + bytes([v])).hex(),
            "authorization": {
                "from": _checksum(frm),
                "to": _checksum(to),
                "value": str(value),
                "validAfter": str(after),
                "validBefore": str(before),
                "nonce": "0x" + nonce.hex(),
            },
        },
    }
    return base64.b64encode(json.dumps(payload).encode()).decode()


def _checksum(address: str) -> str:
    from eth_utils import to_checksum_address

    return str(to_checksum_address(address))


AUTHORIZATION_USED = "0x98de503528ee59b575ef0c0a2576a82497bfc029a5685b209e9ec333479b10a5"
"""keccak256("AuthorizationUsed(address,bytes32)"), EIP-3009's event."""


def settlement_of(cluster: Cluster, payer: str) -> str:
    """The hash of the transaction that used `payer`'s authorization, from the chain's logs."""
    topic = "0x" + "00" * 12 + payer[2:].lower()
    logs = rpc(
        cluster,
        "eth_getLogs",
        {
            "address": cluster.usdx.address,
            "fromBlock": "0x0",
            "topics": [AUTHORIZATION_USED, topic],
        },
    )
    [log] = logs
    return str(log["transactionHash"])


def assert_preview_only(cluster: Cluster, response: httpx.Response, slug: str) -> None:
    assert response.status_code == 402, response.text
    body = response.json()
    assert body["complete"] is False
    article = cluster.catalogue.get(slug)
    assert article is not None
    assert body["content"] == article.preview
    rest = article.body[len(article.preview) :]
    for line in (ln for ln in rest.splitlines() if len(ln) > 40):
        assert line not in response.text  # nothing past the free part


def test_a_third_party_cannot_replay_a_payment_rebuilt_from_the_chain(cluster: Cluster) -> None:
    [buyer] = cluster.funded(1)
    article = cluster.catalogue.get(SLUG)
    assert article is not None
    first = asyncio.run(stock_read(cluster, buyer, "a", SLUG))
    assert first.status == 200, first
    tx_hash = settlement_of(cluster, buyer.address)  # found by watching the chain
    assert tx_hash == first.transaction
    parties = [buyer.address, article.author]
    paid = {a: cluster.usdx.balance_of(a) for a in parties}
    supply = cluster.usdx.total_supply()

    refusals = []
    for server, base in (("a", cluster.a_url), ("b", cluster.b_url)):
        for slug in (SLUG, TWIN):
            header = header_from_calldata(cluster, tx_hash, slug, base)
            for attempt in range(2):
                response = httpx.get(
                    f"{base}/articles/{slug}", headers={"PAYMENT-SIGNATURE": header}, timeout=30
                )
                assert_preview_only(cluster, response, slug)
                refusals.append((server, slug, attempt, response.json()["error"]))
    assert {a: cluster.usdx.balance_of(a) for a in parties} == paid  # no second debit
    assert cluster.usdx.total_supply() == supply
    assert paid[buyer.address] == 1_000_000 - PRICES[SLUG]
    print(f"\nthird-party replay: {len(refusals)} tries refused: {sorted(set(refusals))}")


# -- d. the stock client's extensions against a real server process ---------------------------


class _Recording(httpx.AsyncBaseTransport):
    """Real HTTP, keeping every payment header sent."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.payments: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "PAYMENT-SIGNATURE" in request.headers:
            self.payments.append(request.headers["PAYMENT-SIGNATURE"])
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_the_stock_client_rereads_by_sign_in_with_x_from_a_server_process(
    cluster: Cluster,
) -> None:
    from x402.extensions.sign_in_with_x import (
        CreateSIWxClientExtensionOptions,
        create_siwx_client_extension,
    )
    from x402.http.clients.httpx import x402_httpx_transport

    [account] = cluster.funded(1)
    client = stock_client(cluster, account)
    options = CreateSIWxClientExtensionOptions(signers=[EthAccountSigner(account)])
    client.register_extension(create_siwx_client_extension(options))
    recording = _Recording()

    async def reads() -> list[httpx.Response]:
        transport = x402_httpx_transport(client, recording)
        async with httpx.AsyncClient(transport=transport, base_url=cluster.a_url, timeout=30) as h:
            return [await h.get(f"/articles/{SLUG}") for _ in range(3)]

    first, *again = asyncio.run(reads())
    article = cluster.catalogue.get(SLUG)
    assert article is not None
    assert first.status_code == 200, first.text
    assert PAYMENT_RESPONSE_HEADER in first.headers
    for response in again:
        assert response.status_code == 200, response.text
        assert response.json()["content"] == article.body
        assert PAYMENT_RESPONSE_HEADER not in response.headers  # signed in, nothing paid
    assert len(recording.payments) == 1
    assert cluster.usdx.balance_of(account.address) == 1_000_000 - PRICES[SLUG]


def test_the_stock_clients_payment_identifier_against_a_server_process(
    cluster: Cluster,
) -> None:
    from x402.http.clients.httpx import x402_httpx_transport

    from tests.test_payment_identifier import _WithId

    [account] = cluster.funded(1)
    payment_id = "pay_" + os.urandom(12).hex()

    async def read(slug: str) -> tuple[httpx.Response, _Recording]:
        client = stock_client(cluster, account)
        client.register_extension(_WithId(payment_id))  # type: ignore[arg-type]
        recording = _Recording()
        transport = x402_httpx_transport(client, recording)
        async with httpx.AsyncClient(transport=transport, base_url=cluster.b_url, timeout=30) as h:
            return await h.get(f"/articles/{slug}"), recording

    first, recording = asyncio.run(read(SLUG))
    assert first.status_code == 200, first.text
    [header] = recording.payments
    # The maker's own retry (same id, same payment, no proof) after delivery: the first result.
    retry = httpx.get(
        f"{cluster.b_url}/articles/{SLUG}", headers={"PAYMENT-SIGNATURE": header}, timeout=30
    )
    assert retry.status_code == 200, retry.text
    assert retry.json()["content"] == first.json()["content"]
    assert retry.headers[PAYMENT_RESPONSE_HEADER] == first.headers[PAYMENT_RESPONSE_HEADER]
    # The same id with another payment: 409, nothing charged, no content.
    conflict, _ = asyncio.run(read(VYPER))
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["error"] == Reason.PAYMENT_ID_CONFLICT
    assert "content" not in conflict.json() or not conflict.json().get("complete")
    assert cluster.usdx.balance_of(account.address) == 1_000_000 - PRICES[SLUG]


# -- b. @x402/fetch, the stock TypeScript client, from Node --------------------------------------

ROOT = Path(__file__).resolve().parents[1]
FETCH_SCRIPT = Path(__file__).with_name("js") / "x402_fetch_read.mjs"


def test_x402_fetch_pays_once_and_its_header_alone_reads_no_more(cluster: Cluster) -> None:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "@x402" / "fetch").is_dir():
        pytest.skip("node or @x402/fetch is not installed (npm ci)")
    [account] = cluster.funded(1)
    key = "0x" + bytes(account.key).hex()
    done = subprocess.run(  # noqa: S603 - our own script
        [
            node,
            str(FETCH_SCRIPT),
            f"{cluster.a_url}/articles/{SLUG}",
            key,
            cluster.usdx.asset.network,
            cluster.usdx.address,
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    seen = json.loads(done.stdout.decode().strip().splitlines()[-1])
    article = cluster.catalogue.get(SLUG)
    assert article is not None
    assert seen["first"]["status"] == 200, seen
    assert seen["first"]["body"]["content"] == article.body
    assert seen["first"]["settlement"]["success"] is True
    assert seen["payments"] == 1
    assert seen["again"]["status"] == 402, seen
    assert seen["again"]["body"]["error"] == Reason.NONCE_ALREADY_USED
    assert seen["again"]["body"]["content"] == article.preview
    assert cluster.usdx.balance_of(account.address) == 1_000_000 - PRICES[SLUG]


# -- a, with faults: the node stopped or killed mid-run, then restarted -------------------------

FAULT_READERS = 30
BURST = 16


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_a_read_answered_without_200_is_charged_only_if_already_broadcast(
    cluster: Cluster, how: signal.Signals
) -> None:
    """Stock clients pay on A and B while the node is stopped (or SIGKILLed) and restarted.
    Every debit has a 200, or the server's ledger held its transaction hash (written before
    broadcast) by the time the client had its answer; after a grace period for reconciliation,
    still no other debit."""
    payers = cluster.funded(FAULT_READERS + BURST)
    before = cluster.balances(payers)

    async def run() -> list[Outcome]:
        async def fault() -> None:
            await asyncio.sleep(1.0)
            os.killpg(cluster.node.pid, how)
            await asyncio.to_thread(cluster.node.wait, 30)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(cluster.start_node)

        # A steady stream over ~4 s, and a burst just before the fault, so that some
        # settlements are in flight when the node goes.
        steady, burst = payers[:FAULT_READERS], payers[FAULT_READERS:]
        reads = [stock_read(cluster, p, "ab"[i % 2], SLUG, i * 0.13) for i, p in enumerate(steady)]
        reads += [
            stock_read(cluster, p, "ab"[i % 2], SLUG, 0.5 + i * 0.03) for i, p in enumerate(burst)
        ]
        *outcomes, _ = await asyncio.gather(*reads, fault())
        return outcomes  # type: ignore[return-value]

    outcomes = asyncio.run(run())
    answered = {"a": ledger_rows(cluster.a_dir), "b": ledger_rows(cluster.b_dir)}
    debited = debits(before, cluster.balances(payers))

    def explained(outcome: Outcome) -> bool:
        """Charged without a 200: its settlement was broadcast before the answer went out."""
        row = answered[outcome.server].get(outcome.payer)
        if row is None or row[1] is None:
            return False
        state, tx_hash, updated_at = row
        if state == "settling":  # untouched since the hash was written, before broadcast
            assert updated_at <= outcome.answered_at, (outcome, row)
        return tx_hash == settlement_of(cluster, outcome.payer)

    charged = check_paid_iff_200(cluster, outcomes, debited)
    unexplained = [
        (o.server, o.status, o.payer, answered[o.server].get(o.payer))
        for o in charged
        if not explained(o)
    ]
    assert unexplained == [], unexplained
    poke(cluster, GRACE)
    later = debits(before, cluster.balances(payers))
    charged_later = check_paid_iff_200(cluster, outcomes, later)
    unexplained = [
        (o.server, o.status, o.payer, answered[o.server].get(o.payer))
        for o in charged_later
        if not explained(o)
    ]
    assert unexplained == [], unexplained

    # What the servers' ledgers say of the reads that were not 200, at the answer and after.
    final = {"a": ledger_rows(cluster.a_dir), "b": ledger_rows(cluster.b_dir)}
    sent: dict[str, int] = {}
    for outcome in outcomes:
        if outcome.status != 200:
            at_answer = answered[outcome.server].get(outcome.payer)
            now = final[outcome.server].get(outcome.payer)
            key = (
                f"{outcome.server}:{at_answer[0] if at_answer else 'none'}"
                f"{'+tx' if at_answer and at_answer[1] else ''}->{now[0] if now else 'none'}"
            )
            sent[key] = sent.get(key, 0) + 1
    statuses: dict[str, int] = {}
    for outcome in outcomes:
        key = f"{outcome.server}:{outcome.status or 'error'}"
        statuses[key] = statuses.get(key, 0) + 1
    print(
        f"\nnode {how.name}: {dict(sorted(statuses.items()))}; charged without a 200: "
        f"{len(charged)} at once, {len(charged_later)} after {GRACE:.0f} s (each broadcast "
        f"before its answer); their ledger rows: {dict(sorted(sent.items()))}"
    )
    assert statuses.get("a:200", 0) + statuses.get("b:200", 0) > 0  # traffic before and after
    assert len(outcomes) - sum(v for k, v in statuses.items() if k.endswith(":200")) > 0
