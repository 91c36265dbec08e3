"""Several `agent-pay serve` processes on one PostgreSQL store behave as one server.

Real processes throughout: `agent-pay node` (the chain both settle on), a PostgreSQL started
by the test, and server instances with their own data directories and one store. One payment
sent to two instances at once settles once; bought on one, it is a free re-read on the other;
an instance SIGKILLed at each step of a paid read leaves its payment to the other, which
delivers the retry with exactly one debit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.chain.stablecoin import Stablecoin
from agent_pay.client.schemes import ExactClientScheme
from agent_pay.errors import Reason
from agent_pay.node.anvil import free_port, wait_for_rpc
from agent_pay.node.deployment import find_stablecoins
from agent_pay.protocol import PaymentRequired
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)
from agent_pay.protocol.extensions import ENTITLEMENT_HEADER
from agent_pay.server.faults import FaultPoint
from agent_pay.signing import LocalSigner
from agent_pay.store.local_postgres import local_postgres
from tests._entitlement import challenge_for, proof_header
from tests.test_many_processes import Processes, wait_for_http

pytestmark = pytest.mark.slow

SLUG = "why-micropayments-failed"  # 0.1 USDX
PRICE = 100_000
LEASE = "2"  # seconds: how soon a killed instance's payments pass to the other


@dataclass
class Cluster:
    processes: Processes
    node_url: str
    store: str
    chain: JsonRpcChain
    usdx: Stablecoin
    environ: dict[str, str]

    def serve(self, name: str, *extra: str) -> tuple[str, subprocess.Popen[bytes]]:
        """Start an instance on the shared store; its URL and process, once it answers."""
        port = free_port()
        child = self.processes.start(
            [
                "serve",
                "--chain",
                self.node_url,
                "--port",
                str(port),
                "--store",
                self.store,
                "--server-dir",
                str(self.processes.workdir / name),
                *extra,
            ],
            **self.environ,
        )
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/articles", child)
        return url, child

    def payer(self) -> LocalSigner:
        signer = LocalSigner.random()
        self.usdx.mint_many(Transactor(self.chain, dev_signer(0)), [(signer.address, 10**6)])
        return signer

    def balance(self, address: str) -> int:
        return self.usdx.balance_of(address)

    def payment(self, base: str, signer: LocalSigner) -> str:
        """A PAYMENT-SIGNATURE header paying for `SLUG` as offered by the server at `base`."""
        response = httpx.get(f"{base}/articles/{SLUG}")
        assert response.status_code == 402
        required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
        offer = next(o for o in required.accepts if o.scheme == "exact")
        return encode_header(ExactClientScheme(signer).sign(offer, required))

    def row(self, payer: str) -> tuple[str, ...]:
        with psycopg.connect(self.store) as connection:
            rows = connection.execute(
                "SELECT state, tx_hash FROM payments WHERE payer = %s", (payer,)
            ).fetchall()
        assert len(rows) == 1, rows
        return tuple(rows[0])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("shared-store")
    processes = Processes(workdir)
    try:
        with local_postgres() as store:
            node_port = free_port()
            node_url = f"http://127.0.0.1:{node_port}"
            node = processes.start(["node", "--port", str(node_port)])
            wait_for_rpc(node_url, timeout=30, process=node)
            environ = {
                "AGENT_PAY_RECEIPT_KEY": "0x" + os.urandom(32).hex(),
                "AGENT_PAY_STORE_LEASE": LEASE,
            }
            with JsonRpcChain(node_url) as chain:
                usdx = find_stablecoins(chain)["USDX"]
                yield Cluster(processes, node_url, store, chain, usdx, environ)
    finally:
        processes.stop_all()


@pytest.fixture(scope="module")
def two(cluster: Cluster) -> tuple[str, str]:
    """Two instances on the shared store, running for the module."""
    return cluster.serve("a")[0], cluster.serve("b")[0]


def test_one_payment_sent_to_two_instances_at_once_settles_once(
    cluster: Cluster, two: tuple[str, str]
) -> None:
    signer = cluster.payer()
    header = cluster.payment(two[0], signer)
    url = f"/articles/{SLUG}"

    def send(base: str) -> httpx.Response:
        return httpx.get(base + url, headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=60)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(send, two))
    # As two requests on one instance: the one that settles, and the other shares its answer
    # (200), or comes after it was delivered and is told it was used (402, not charged).
    assert sorted(a.status_code for a in answers)[0] == 200, [a.text for a in answers]
    for answer in answers:
        assert answer.status_code == 200 or answer.json()["error"] == Reason.NONCE_ALREADY_USED
    assert cluster.balance(signer.address) == 10**6 - PRICE
    assert cluster.row(signer.address)[0] in ("settled", "delivered")


def test_bought_on_one_instance_is_a_free_reread_on_the_other(
    cluster: Cluster, two: tuple[str, str]
) -> None:
    signer = cluster.payer()
    first, second = two
    paid = httpx.get(
        f"{first}/articles/{SLUG}",
        headers={PAYMENT_SIGNATURE_HEADER: cluster.payment(first, signer)},
        timeout=60,
    )
    assert paid.status_code == 200, paid.text
    with httpx.Client(base_url=first) as http:
        challenge = challenge_for(http, SLUG)  # issued by the first instance
    proof = proof_header(signer, challenge, f"/articles/{SLUG}")
    reread = httpx.get(f"{second}/articles/{SLUG}", headers={ENTITLEMENT_HEADER: proof})
    assert reread.status_code == 200, reread.text
    assert reread.json()["complete"] is True
    assert cluster.balance(signer.address) == 10**6 - PRICE, "read twice, paid once"


@pytest.mark.parametrize("point", list(FaultPoint))
def test_an_instance_killed_mid_payment_leaves_the_retry_to_another(
    cluster: Cluster, two: tuple[str, str], point: FaultPoint
) -> None:
    """SIGKILL at each step of a paid read on one instance; the same header retried on
    another is delivered, and the payer is debited exactly once."""
    doomed, child = cluster.serve(f"doomed-{point}", "--fault-kill-at", str(point))
    signer = cluster.payer()
    header = cluster.payment(doomed, signer)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{doomed}/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: header})
    assert child.wait(timeout=30) == -9, "killed at the fault point"
    started = time.monotonic()
    retry = httpx.get(
        f"{two[1]}/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: header}, timeout=60
    )
    assert retry.status_code == 200, (point, retry.text)
    assert retry.json()["complete"] is True
    assert cluster.balance(signer.address) == 10**6 - PRICE, "debited exactly once"
    state, tx_hash = cluster.row(signer.address)
    assert state in ("settled", "delivered")
    assert tx_hash
    assert time.monotonic() - started < 30


def test_workers_share_one_port_and_one_store(cluster: Cluster) -> None:
    """`serve --workers 2`: two processes answer on one port; both are live instances."""
    with psycopg.connect(cluster.store) as connection:
        (before,) = connection.execute("SELECT now()").fetchone() or (None,)
    base, supervisor = cluster.serve("workers", "--workers", "2")
    signer = cluster.payer()
    paid = httpx.get(
        f"{base}/articles/{SLUG}",
        headers={PAYMENT_SIGNATURE_HEADER: cluster.payment(base, signer)},
        timeout=60,
    )
    assert paid.status_code == 200, paid.text
    assert cluster.balance(signer.address) == 10**6 - PRICE
    with psycopg.connect(cluster.store) as connection:
        (live,) = connection.execute(
            "SELECT COUNT(*) FROM instances WHERE started_at > %s", (before,)
        ).fetchone() or (0,)
    assert live == 2, "two workers, each an instance on the store"
    # A worker that dies is started again, and the port keeps answering meanwhile.
    workers = [int(p) for p in Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children")
               .read_text().split()]  # fmt: skip
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        assert httpx.get(f"{base}/articles", timeout=10).status_code == 200
        children = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children").read_text()
        if len(children.split()) == 2 and str(workers[0]) not in children.split():
            break
        assert time.monotonic() < deadline, "the dead worker was not replaced"
        time.sleep(0.2)
    supervisor.terminate()
    assert supervisor.wait(timeout=60) == 0


def test_a_payment_left_by_a_killed_instance_is_resolved_without_a_retry(
    cluster: Cluster, two: tuple[str, str]
) -> None:
    """Nobody retries: the other instances' recovery pass, which runs while requests come in,
    takes the payment over once the killed instance's lease ran out, and abandons it (nothing
    was sent: the payer is not charged)."""
    doomed, child = cluster.serve("doomed-unretried", "--fault-kill-at", "verified")
    signer = cluster.payer()
    header = cluster.payment(doomed, signer)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{doomed}/articles/{SLUG}", headers={PAYMENT_SIGNATURE_HEADER: header})
    assert child.wait(timeout=30) == -9
    assert cluster.row(signer.address)[0] == "verified"
    deadline = time.monotonic() + 30
    while cluster.row(signer.address)[0] == "verified":
        assert time.monotonic() < deadline, "no instance resolved the payment"
        httpx.get(f"{two[0]}/articles/{SLUG}")  # a free preview: requests keep passes going
        time.sleep(0.5)
    with psycopg.connect(cluster.store) as connection:
        row = connection.execute(
            "SELECT state, error_reason FROM payments WHERE payer = %s", (signer.address,)
        ).fetchone()
    assert row == ("failed", "payment_abandoned")
    assert cluster.balance(signer.address) == 10**6, "nothing was charged"
