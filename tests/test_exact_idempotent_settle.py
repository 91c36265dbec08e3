"""The "exact" facilitator settles each authorization once, however often it is asked.

Straight against `ExactEvmScheme` on the embedded chain: settling again returns the earlier
transfer (even after the authorization expired), concurrent settlements share one transaction,
and an authorization used by anything but this very transfer stays refused.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.embedded import EmbeddedChain
from agent_pay.chain.stablecoin import TRANSFER_WITH_AUTHORIZATION_GAS
from agent_pay.errors import ChainUnavailableError, PaymentRejectedError, Reason
from agent_pay.facilitator.exact import AUTHORIZATION_USED_TOPIC, ExactEvmScheme
from agent_pay.protocol import (
    X402_VERSION,
    ExactEvmPayload,
    PaymentPayload,
    PaymentRequirements,
)
from agent_pay.signing import (
    CancelAuthorization,
    LocalSigner,
    TokenDomain,
    TransferAuthorization,
    cancel_authorization_typed_data,
    random_nonce,
    receive_with_authorization_typed_data,
    split_signature,
    transfer_with_authorization_typed_data,
)
from agent_pay.testing import FakeClock, Testbed

PRICE = 100_000


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock(int(time.time()))


@pytest.fixture(scope="module")
def bed(clock: FakeClock) -> Testbed:
    return Testbed.create(chain=EmbeddedChain(clock=clock))


def offer(bed: Testbed) -> PaymentRequirements:
    article = bed.catalogue.get("why-micropayments-failed")
    assert article is not None
    asset = bed.tokens["USDX"].asset
    return PaymentRequirements(
        scheme="exact",
        network=asset.network,
        amount=PRICE,
        asset=asset.address,
        pay_to=article.author,
        max_timeout_seconds=120,
        extra={"name": asset.eip712_name, "version": asset.eip712_version},
    )


def pay(
    bed: Testbed, signer: LocalSigner, **changes: Any
) -> tuple[PaymentPayload, PaymentRequirements]:
    requirements = offer(bed)
    now = bed.chain.next_timestamp()
    fields: dict[str, Any] = {
        "from_": signer.address,
        "to": requirements.pay_to,
        "value": PRICE,
        "valid_after": now - 600,
        "valid_before": now + 120,
        "nonce": random_nonce(),
    }
    fields.update(changes)
    auth = TransferAuthorization(**fields)
    domain = TokenDomain.from_requirements(requirements)
    signature = signer.sign_typed_data(transfer_with_authorization_typed_data(domain, auth))
    payload = ExactEvmPayload(signature="0x" + signature.hex(), authorization=auth.to_wire())
    payment = PaymentPayload(
        x402_version=X402_VERSION, accepted=requirements, payload=payload.to_wire()
    )
    return payment, requirements


def funded(bed: Testbed) -> LocalSigner:
    signer = LocalSigner.random()
    bed.fund(signer.address, "USDX", "1")
    return signer


def used_logs(bed: Testbed, payer: str) -> int:
    topic = bytes(12) + bytes.fromhex(payer[2:])
    return len(bed.chain.get_logs(bed.tokens["USDX"].address, [AUTHORIZATION_USED_TOPIC, topic]))


def test_settling_twice_returns_the_first_transfer(bed: Testbed) -> None:
    payer = funded(bed)
    payment, requirements = pay(bed, payer)
    first = bed.scheme.settle(payment, requirements)
    balance = bed.balance(payer.address)

    again = bed.scheme.settle(payment, requirements)

    assert again.transaction == first.transaction
    assert again.payer == payer.address
    assert again.amount == PRICE
    assert bed.balance(payer.address) == balance
    assert used_logs(bed, payer.address) == 1
    with pytest.raises(PaymentRejectedError) as refused:
        bed.scheme.verify(payment, requirements)  # verify still says: not payable now
    assert refused.value.reason == Reason.NONCE_ALREADY_USED


def test_a_settled_authorization_stays_settled_after_it_expires(
    bed: Testbed, clock: FakeClock
) -> None:
    """A server that comes back after the payment's validBefore must still learn it was paid."""
    payer = funded(bed)
    payment, requirements = pay(bed, payer)
    first = bed.scheme.settle(payment, requirements)
    clock.now += 3600
    try:
        assert bed.scheme.settle(payment, requirements).transaction == first.transaction
        unused, _ = pay(bed, payer, valid_before=clock.now - 3000)
        with pytest.raises(PaymentRejectedError) as expired:
            bed.scheme.settle(unused, requirements)
        assert expired.value.reason == Reason.VALID_BEFORE_EXPIRED
    finally:
        clock.now -= 3600


def test_concurrent_settlements_of_one_authorization_share_one_transaction(
    bed: Testbed,
) -> None:
    payer = funded(bed)
    payment, requirements = pay(bed, payer)
    balance = bed.balance(payer.address)
    barrier = threading.Barrier(12)

    def settle() -> str:
        barrier.wait()
        return bed.scheme.settle(payment, requirements).transaction

    with ThreadPoolExecutor(12) as pool:
        transactions = set(pool.map(lambda _: settle(), range(12)))

    assert len(transactions) == 1
    assert bed.balance(payer.address) == balance - PRICE
    assert used_logs(bed, payer.address) == 1


def test_a_front_run_transfer_counts_as_this_settlement(bed: Testbed) -> None:
    payer = funded(bed)
    payment, requirements = pay(bed, payer)
    exact = payment.exact_evm()
    auth = TransferAuthorization.from_wire(exact.authorization)
    token = bed.tokens["USDX"]
    data = token.transfer_with_authorization_data(
        auth.from_,
        auth.to,
        auth.value,
        auth.valid_after,
        auth.valid_before,
        auth.nonce,
        bytes.fromhex(exact.signature[2:]),
    )
    front_runner = Transactor(bed.chain, dev_signer(4))
    tx_hash = front_runner.send(token.address, data, gas=TRANSFER_WITH_AUTHORIZATION_GAS)
    assert bed.chain.wait_for_receipt(tx_hash).status

    settled = bed.scheme.settle(payment, requirements)

    assert settled.transaction == "0x" + tx_hash.hex()


def test_a_cancelled_authorization_is_not_a_settlement(bed: Testbed) -> None:
    payer = funded(bed)
    payment, requirements = pay(bed, payer)
    nonce = bytes.fromhex(payment.exact_evm().authorization.nonce[2:])
    domain = TokenDomain.from_requirements(requirements)
    cancel = CancelAuthorization(payer.address, nonce)
    v, r, s = split_signature(
        payer.sign_typed_data(cancel_authorization_typed_data(domain, cancel))
    )
    bed.tokens["USDX"].contract.transact(
        Transactor(bed.chain, dev_signer(4)),
        "cancelAuthorization",
        payer.address,
        nonce,
        v,
        r.to_bytes(32, "big"),
        s.to_bytes(32, "big"),
    )

    with pytest.raises(PaymentRejectedError) as refused:
        bed.scheme.settle(payment, requirements)
    assert refused.value.reason == Reason.NONCE_ALREADY_USED


def test_the_nonce_used_by_another_transfer_is_not_this_settlement(bed: Testbed) -> None:
    """The payer spent the same nonce on a ReceiveWithAuthorization to someone else: the
    AuthorizationUsed log exists, but it did not pay this payee, so nothing is reported paid."""
    payer = funded(bed)
    payment, requirements = pay(bed, payer)
    nonce = bytes.fromhex(payment.exact_evm().authorization.nonce[2:])
    payee = Transactor(bed.chain, dev_signer(5))
    now = bed.chain.next_timestamp()
    other = TransferAuthorization(payer.address, payee.address, PRICE, now - 600, now + 120, nonce)
    domain = TokenDomain.from_requirements(requirements)
    v, r, s = split_signature(
        payer.sign_typed_data(receive_with_authorization_typed_data(domain, other))
    )
    bed.tokens["USDX"].contract.transact(
        payee,
        "receiveWithAuthorization",
        payer.address,
        payee.address,
        PRICE,
        other.valid_after,
        other.valid_before,
        nonce,
        v,
        r.to_bytes(32, "big"),
        s.to_bytes(32, "big"),
    )
    assert used_logs(bed, payer.address) == 1

    with pytest.raises(PaymentRejectedError) as refused:
        bed.scheme.settle(payment, requirements)
    assert refused.value.reason == Reason.NONCE_ALREADY_USED


def test_the_submitted_hook_hears_the_transaction_before_it_is_confirmed(bed: Testbed) -> None:
    heard: list[tuple[str, bytes, str]] = []
    scheme = ExactEvmScheme(
        bed.tokens.values(),
        Transactor(bed.chain, dev_signer(6)),
        on_submitted=lambda *args: heard.append(args),
    )
    payer = funded(bed)
    payment, requirements = pay(bed, payer)
    settled = scheme.settle(payment, requirements)
    nonce = bytes.fromhex(payment.exact_evm().authorization.nonce[2:])
    assert heard == [(payer.address, nonce, settled.transaction)]

    def broken(*_: object) -> None:
        raise RuntimeError("the ledger is on fire")

    # A failing hook stops the broadcast: whoever listens must hear of all that may settle.
    deaf = ExactEvmScheme(
        bed.tokens.values(), Transactor(bed.chain, dev_signer(6)), on_submitted=broken
    )
    payment, requirements = pay(bed, payer)
    balance = bed.balance(payer.address)
    with pytest.raises(ChainUnavailableError, match="not sent") as refused:
        deaf.settle(payment, requirements)
    assert refused.value.broadcast is False
    assert bed.balance(payer.address) == balance
    assert scheme.settle(payment, requirements).transaction.startswith("0x")  # still valid
