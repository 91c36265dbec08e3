"""`ProcessChain` beyond the `Chain` contract (tests/test_chain_conformance.py runs that): many
settlements in flight at once, garbage on its sockets, and its process killed under a server.

Each test starts the chain's process, so each is slow.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
from collections.abc import Iterator

import anyio
import pytest

from agent_pay.chain.base import ChainError
from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_account, dev_signer
from agent_pay.chain.process import ChainProcessError, ProcessChain
from agent_pay.errors import Reason
from agent_pay.server.ledger import PaymentState
from agent_pay.signing import LocalSigner
from agent_pay.testing import Testbed
from tests.test_chain_trouble import header_for, paid_read

pytestmark = pytest.mark.slow

ETHER = 10**18


@pytest.fixture
def chain() -> Iterator[ProcessChain]:
    with ProcessChain() as chain:
        yield chain


def test_many_settlements_at_once_each_get_their_own_receipt(chain: ProcessChain) -> None:
    """48 senders in 48 threads, each sending and waiting at once: every transaction has its
    own receipt, mined, and the child packed them into far fewer blocks than transactions."""
    bank = Transactor(chain, dev_signer(6))
    senders = [Transactor(chain, LocalSigner.random()) for _ in range(48)]
    funding = [bank.send(s.address, b"", gas=21_000, value=ETHER) for s in senders]
    assert all(chain.wait_for_receipt(h).status for h in funding)
    start = threading.Barrier(len(senders))
    receipts: dict[bytes, int] = {}
    errors: list[BaseException] = []

    def pay(sender: Transactor) -> None:
        try:
            start.wait()
            tx_hash = sender.send(dev_account(9).address, b"", gas=21_000, value=1)
            receipt = chain.wait_for_receipt(tx_hash)
            assert receipt.tx_hash == tx_hash
            assert receipt.status
            receipts[tx_hash] = receipt.block_number
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=pay, args=(s,)) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(receipts) == len(senders)  # one receipt per transaction, none shared
    assert len(set(receipts.values())) < len(senders) // 2  # group commit in the child


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"\x00\x01not a pickle",
        pickle.dumps((1, "get_balance")),  # the wrong shape
        pickle.dumps(("one", "block_number", ())),  # an id that is not a number
        pickle.dumps((1, "no_such_method", ())),
        pickle.dumps((1, "block_number", (1, 2, 3))),  # the wrong arguments
        # A pickle naming a callable: loading it would run os.system; it must be refused.
        b"cos\nsystem\n(S'true'\ntR.",
    ],
)
def test_garbage_on_the_socket_is_answered_or_ignored_never_run(
    chain: ProcessChain, garbage: bytes
) -> None:
    conn = chain._free[0]  # a connection nobody else uses in this test
    conn.send_bytes(garbage)
    if conn.poll(0.3):  # a well-formed request for a wrong method or arguments: an error
        answer = pickle.loads(conn.recv_bytes())  # noqa: S301 - from our own child
        assert answer[0] == 1
        assert answer[1] is False
    # The child is alive and every connection still answers, this one included.
    assert chain.block_number() == 0
    assert chain.get_balance(dev_account(0).address) > 0


def test_an_answer_for_a_call_that_gave_up_is_not_read_as_the_next_ones(
    chain: ProcessChain,
) -> None:
    bank = Transactor(chain, dev_signer(6))
    with chain.expecting():  # the block waits (up to its group wait) for this caller
        tx_hash = bank.send(dev_account(9).address, b"", gas=21_000, value=1)
        with pytest.raises(TimeoutError):
            chain.wait_for_receipt(tx_hash, timeout=0.001)
    assert chain.wait_for_receipt(tx_hash).tx_hash == tx_hash
    assert chain.block_number() == 1  # the late receipt was skipped, not taken for this


def test_every_call_fails_as_unavailable_once_the_child_is_gone(chain: ProcessChain) -> None:
    os.kill(chain.pid, signal.SIGKILL)
    chain._process.wait()
    with pytest.raises(ChainProcessError):
        chain.block_number()
    with pytest.raises(ChainError):  # and every later call, at once
        chain.get_balance(dev_account(0).address)


class _KilledWhileMining(ProcessChain):
    """The chain's process is killed (SIGKILL) while a settlement waits for its block: sent,
    its hash recorded, not known to be mined."""

    armed = False

    def wait_for_receipt(self, tx_hash: bytes, timeout: float = 30.0) -> object:  # type: ignore[override]
        if self.armed:
            os.kill(self.pid, signal.SIGKILL)
            self._process.wait()
        return super().wait_for_receipt(tx_hash, timeout)


def test_the_child_killed_mid_settlement_is_a_503_and_nothing_is_charged_twice() -> None:
    with _KilledWhileMining() as chain:
        bed = Testbed.create(chain=chain)
        agent = bed.agent(funds={"USDX": "1"})
        with bed.client() as client:
            header = header_for(client, agent)
            chain.armed = True
            response = paid_read(client, header)
            assert response.status_code == 503, response.text
            assert response.json()["error"] == Reason.CHAIN_UNAVAILABLE
            assert "chain process is gone" in response.json()["message"]
            [entry] = bed.ledger.entries()
            # Sent: its hash was recorded before the broadcast; it may have been mined.
            assert entry.state is PaymentState.SETTLING
            assert entry.tx_hash is not None
            # A retry of the same payment is 503 again: nothing sent again, nothing served.
            again = paid_read(client, header)
            assert again.status_code == 503
            assert again.json()["error"] == Reason.CHAIN_UNAVAILABLE
            assert [e.tx_hash for e in bed.ledger.entries()] == [entry.tx_hash]
        # Reconciliation cannot ask a chain that is gone: it leaves the entry settling (the
        # transaction recorded), neither failed nor settled, and submits nothing.
        report = anyio.run(bed.server.checkout.reconcile)
        assert (report.settled, report.failed, report.unresolved) == (0, 0, 1)
        [after] = bed.ledger.entries()
        assert after.state is PaymentState.SETTLING
        assert after.tx_hash == entry.tx_hash
