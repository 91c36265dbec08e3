"""A `Spending` kept in a file: it outlives the process, it is reserved before anything is
signed, and processes sharing it cannot pay past the budget together."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from agent_pay.assets import Asset
from agent_pay.client.policy import Spending, SpendingPolicy
from agent_pay.client.spending_ledger import SpendingFile
from agent_pay.errors import PolicyViolationError
from agent_pay.protocol import PaymentRequirements

PAYER = "0x" + "11" * 20
USDX = Asset(
    network="eip155:31337",
    address="0x" + "22" * 20,
    symbol="USDX",
    decimals=6,
    eip712_name="USD X",
    eip712_version="1",
)


def offer(amount: int) -> PaymentRequirements:
    return PaymentRequirements(
        scheme="exact",
        network=USDX.network,
        amount=amount,
        asset=USDX.address,
        pay_to="0x" + "33" * 20,
        max_timeout_seconds=60,
        extra={"name": USDX.eip712_name, "version": USDX.eip712_version},
    )


def policy(budget: str = "1") -> SpendingPolicy:
    return SpendingPolicy.per_token([USDX], max_per_payment="0.5", budget=budget)


def test_what_is_spent_and_reserved_survives_a_restart(tmp_path: Path) -> None:
    first = Spending.open(policy(), tmp_path, PAYER)
    first.reserve(offer(400_000))
    first.commit(offer(400_000))
    first.reserve(offer(300_000))  # signed, answer lost: stays reserved
    again = Spending.open(policy(), tmp_path, PAYER)
    assert again.spent(USDX) == 400_000
    assert again.committed_or_reserved(USDX) == 700_000
    with pytest.raises(PolicyViolationError):
        again.reserve(offer(400_000))
    # The lost payment is resent after the restart and confirmed: counted once, not twice.
    again.commit(offer(300_000), reserved=False)
    assert (again.spent(USDX), again.committed_or_reserved(USDX)) == (700_000, 700_000)
    # A refused payment is released; another payer's tally is apart.
    again.reserve(offer(200_000))
    again.release(offer(200_000))
    assert again.remaining(USDX) == 300_000
    assert Spending.open(policy(), tmp_path, "0x" + "44" * 20).remaining(USDX) == 1_000_000


def _reserve_all(directory: str, results: multiprocessing.Queue[int]) -> None:
    spending = Spending.open(policy("1"), directory, PAYER)
    count = 0
    for _ in range(20):
        try:
            spending.reserve(offer(100_000))
        except PolicyViolationError:
            continue
        count += 1
    results.put(count)


@pytest.mark.slow
def test_processes_sharing_the_file_cannot_pay_past_the_budget(tmp_path: Path) -> None:
    SpendingFile.open(tmp_path, PAYER).close()  # the schema, before the race
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[int] = context.Queue()
    workers = [context.Process(target=_reserve_all, args=(str(tmp_path), results)) for _ in "ab"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert results.get(timeout=5) + results.get(timeout=5) == 10  # 1 USDX / 0.1
    assert Spending.open(policy(), tmp_path, PAYER).committed_or_reserved(USDX) == 1_000_000
