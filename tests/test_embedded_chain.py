"""EmbeddedChain, Transactor and Contract: accepting, batching, mining and refusing transactions.

A tiny Vyper contract compiled inline stands in for real ones: it stores, logs and reverts.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from agent_pay.chain.base import (
    Chain,
    ChainError,
    ContractRevertError,
    Receipt,
    TransactionRejectedError,
)
from agent_pay.chain.contract import NONCE_RETRIES, Contract, Transactor, deploy_contract
from agent_pay.chain.devkeys import dev_account, dev_accounts, dev_signer
from agent_pay.chain.embedded import DEFAULT_CHAIN_ID, EmbeddedChain
from agent_pay.signing import LocalSigner
from agent_pay.testing import CompiledContract, FakeClock, compile_tiny, signed_transfer

T0 = 1_700_000_000
ETHER = 10**18
DEV_FUNDS = 10_000 * ETHER
ANVIL_FIRST_CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ANVIL_SECOND_CONTRACT = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
STORE_GAS = 100_000


@pytest.fixture(scope="module")
def tiny() -> CompiledContract:
    return compile_tiny()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def chain(clock: FakeClock) -> EmbeddedChain:
    return EmbeddedChain(clock=clock)


@pytest.fixture
def deployer(chain: EmbeddedChain) -> Transactor:
    return Transactor(chain, dev_signer(0))


@pytest.fixture
def contract(deployer: Transactor, tiny: CompiledContract) -> Contract:
    return deploy_contract(deployer, tiny.abi, tiny.bytecode, False)


# -- identity and genesis ----------------------------------------------------------------------


def test_chain_id_defaults_to_anvils() -> None:
    chain = EmbeddedChain()
    assert chain.chain_id == DEFAULT_CHAIN_ID == 31337
    assert isinstance(chain, Chain)


def test_chain_id_is_configurable_and_enforced() -> None:
    chain = EmbeddedChain(chain_id=8453)
    sender = Transactor(chain, dev_signer(0))

    receipt = sender.transact(dev_account(1).address, b"", gas=21_000, value=1)

    assert chain.chain_id == 8453
    assert receipt.status


def test_dev_accounts_are_funded(chain: EmbeddedChain) -> None:
    for account in dev_accounts():
        assert chain.get_balance(account.address) == DEV_FUNDS
        assert chain.get_nonce(account.address) == 0
    assert chain.get_balance(Account.create().address) == 0
    assert chain.block_number() == 0


def test_funded_accounts_and_amount_are_configurable() -> None:
    stranger = Account.create().address
    chain = EmbeddedChain(funded=[stranger], funds=5 * ETHER)

    assert chain.get_balance(stranger) == 5 * ETHER
    assert chain.get_balance(dev_account(0).address) == 0


def test_genesis_takes_the_clock(clock: FakeClock, chain: EmbeddedChain) -> None:
    assert chain.latest_timestamp() == T0


# -- deployment and Contract -------------------------------------------------------------------


def test_deploy_addresses_are_anvils(deployer: Transactor, tiny: CompiledContract) -> None:
    first = deploy_contract(deployer, tiny.abi, tiny.bytecode, False)
    second = deploy_contract(deployer, tiny.abi, tiny.bytecode, False)

    assert first.address == ANVIL_FIRST_CONTRACT
    assert second.address == ANVIL_SECOND_CONTRACT
    assert deployer.chain.get_code(first.address)
    assert deployer.chain.get_code(dev_account(0).address) == b""


def test_deploy_that_reverts_raises(deployer: Transactor, tiny: CompiledContract) -> None:
    with pytest.raises(ContractRevertError, match="tiny: constructor says no"):
        deploy_contract(deployer, tiny.abi, tiny.bytecode, True, gas=500_000)


def test_contract_transacts_and_decodes_events(contract: Contract, deployer: Transactor) -> None:
    receipt = contract.transact(deployer, "store", 7, 42)

    assert receipt.status
    assert receipt.to == contract.address
    assert receipt.sender == deployer.address
    assert receipt.contract_address is None
    assert contract.events(receipt, "Stored") == [
        {"event": "Stored", "key": 7, "value": 42, "by": deployer.address}
    ]
    assert contract.call("stored", 7) == 42


def test_contract_call_returns_one_value_bare_and_several_as_a_tuple(contract: Contract) -> None:
    sender = dev_account(3).address
    assert contract.call("positive", 5) == 5
    doubled, caller = contract.call("pair", 21, sender=sender)
    assert doubled == 42
    assert caller.lower() == sender.lower()


def test_contract_rejects_unknown_functions_and_wrong_arity(contract: Contract) -> None:
    with pytest.raises(AttributeError, match="no function 'nope'"):
        contract.encode("nope")
    with pytest.raises(TypeError, match="store takes 2 arguments, got 1"):
        contract.encode("store", 1)


def test_transact_with_check_raises_on_revert(contract: Contract, deployer: Transactor) -> None:
    with pytest.raises(ContractRevertError, match="tiny: boom") as caught:
        contract.transact(deployer, "boom", gas=STORE_GAS)
    assert caught.value.reason == "tiny: boom"


# -- reverts -----------------------------------------------------------------------------------


def test_reverted_transaction_is_mined_with_its_reason(
    chain: EmbeddedChain, contract: Contract, deployer: Transactor
) -> None:
    balance = chain.get_balance(deployer.address)

    receipt = contract.transact(deployer, "boom", gas=STORE_GAS, check=False)

    assert not receipt.status
    assert receipt.revert_reason == "tiny: boom"
    assert receipt.logs == ()
    assert 21_000 < receipt.gas_used < STORE_GAS
    assert chain.get_balance(deployer.address) < balance  # gas is paid all the same
    assert chain.get_nonce(deployer.address) == 2  # the deployment, then this


def test_revert_without_a_reason_and_out_of_gas_are_named(
    contract: Contract, deployer: Transactor
) -> None:
    bare = contract.transact(deployer, "bare", 0, gas=STORE_GAS, check=False)
    starved = contract.transact(deployer, "store", 1, 1, gas=25_000, check=False)

    assert (bare.status, bare.revert_reason) == (False, "Revert")
    assert (starved.status, starved.revert_reason) == (False, "OutOfGas")
    assert starved.gas_used == 25_000  # out of gas: all of it is spent


def test_gas_limit_below_the_calldata_floor_is_rejected(
    chain: EmbeddedChain, contract: Contract
) -> None:
    # 4 + 64 bytes of calldata, 6 of them non-zero: floor 21,000 + 10 * (62 + 4 * 6) = 21,860.
    data = contract.encode("store", 1, 1)
    raw = signed_transfer(
        dev_account(1), chain, to=contract.address, data=data, value=0, gas=21_500
    )

    with pytest.raises(TransactionRejectedError):
        chain.send_raw_transaction(raw)


def test_call_of_a_reverting_view_raises_with_the_reason(contract: Contract) -> None:
    with pytest.raises(ContractRevertError, match="tiny: not positive") as caught:
        contract.call("positive", 0)
    assert caught.value.reason == "tiny: not positive"
    assert caught.value.data[:4] == bytes.fromhex("08c379a0")


def test_estimate_gas_of_a_reverting_call_raises(
    chain: EmbeddedChain, contract: Contract, deployer: Transactor
) -> None:
    assert chain.estimate_gas(contract.address, contract.encode("store", 1, 1), deployer.address)
    with pytest.raises(ContractRevertError, match="tiny: boom"):
        chain.estimate_gas(contract.address, contract.encode("boom"), deployer.address)
    with pytest.raises(ContractRevertError, match="tiny: boom"):
        deployer.send(contract.address, contract.encode("boom"))  # no gas given: estimates


# -- group commit ------------------------------------------------------------------------------


def test_transactions_sent_then_waited_for_are_mined_in_one_block(
    chain: EmbeddedChain, contract: Contract, deployer: Transactor
) -> None:
    start = chain.block_number()
    others = [Transactor(chain, dev_signer(i)) for i in (1, 2, 3)]
    hashes = [
        deployer.send(contract.address, contract.encode("store", k, k), gas=STORE_GAS)
        for k in range(1, 6)
    ]
    hashes += [t.send(dev_account(9).address, b"", gas=21_000, value=1) for t in others]
    hashes.append(deployer.send(contract.address, contract.encode("boom"), gas=STORE_GAS))
    assert all(chain.get_receipt(h) is None for h in hashes)
    assert chain.get_nonce(deployer.address) == 7  # pending transactions count

    receipts = [chain.wait_for_receipt(h) for h in hashes]

    assert chain.block_number() == start + 1
    assert {r.block_number for r in receipts} == {start + 1}
    assert [r.tx_hash for r in receipts] == hashes
    stores, transfers, (boom,) = receipts[:5], receipts[5:8], receipts[8:]
    # Each receipt carries its own gas, not the block's running total.
    assert len({r.gas_used for r in stores}) == 1
    assert 40_000 < stores[0].gas_used < STORE_GAS
    assert [r.gas_used for r in transfers] == [21_000] * 3
    assert (boom.status, boom.revert_reason) == (False, "tiny: boom")
    assert all(r.status for r in stores + transfers)
    # Log indexes run across the whole block.
    assert [r.logs[0].log_index for r in stores] == [0, 1, 2, 3, 4]
    assert [contract.call("stored", k) for k in range(1, 6)] == [1, 2, 3, 4, 5]


def test_mine_reports_what_it_included(chain: EmbeddedChain) -> None:
    sender = Transactor(chain, dev_signer(1))
    assert chain.mine() == 0  # nothing pending: no block
    assert chain.block_number() == 0

    for _ in range(3):
        sender.send(dev_account(2).address, b"", gas=21_000, value=1)

    assert chain.mine() == 3
    assert chain.block_number() == 1
    assert chain.mine(allow_empty=True) == 0
    assert chain.block_number() == 2


def test_unknown_transaction(chain: EmbeddedChain) -> None:
    unknown = b"\x12" * 32
    assert chain.get_receipt(unknown) is None
    with pytest.raises(ChainError, match="unknown transaction"):
        chain.wait_for_receipt(unknown)


# -- refused transactions ----------------------------------------------------------------------


def test_wrong_nonce_is_rejected(chain: EmbeddedChain) -> None:
    account = dev_account(1)
    chain.wait_for_receipt(chain.send_raw_transaction(signed_transfer(account, chain)))

    with pytest.raises(TransactionRejectedError, match="nonce 5 is not the next nonce 1"):
        chain.send_raw_transaction(signed_transfer(account, chain, nonce=5))
    with pytest.raises(TransactionRejectedError, match="nonce 0 is not the next nonce 1"):
        chain.send_raw_transaction(signed_transfer(account, chain, nonce=0))
    assert chain.get_nonce(account.address) == 1


def test_transactor_resolves_a_nonce_clash_by_itself(chain: EmbeddedChain) -> None:
    """Another process sends from the same account behind the transactor's back: the node
    refuses the transactor's nonce, and `send` reads it again and signs anew, telling each
    hash before it is broadcast."""
    account = dev_account(1)
    sender = Transactor(chain, dev_signer(1))
    assert sender.transact(dev_account(2).address, b"", gas=21_000, value=1).status
    chain.wait_for_receipt(chain.send_raw_transaction(signed_transfer(account, chain)))
    heard: list[bytes] = []

    tx_hash = sender.send(
        dev_account(2).address, b"", gas=21_000, value=1, before_broadcast=heard.append
    )

    assert chain.wait_for_receipt(tx_hash).status
    assert len(heard) == 2  # the refused one, then the one sent
    assert heard[-1] == tx_hash
    assert chain.get_receipt(heard[0]) is None


def test_transactor_gives_up_on_a_clash_that_does_not_clear(chain: EmbeddedChain) -> None:
    class Refusing:
        """Refuses every transaction for its nonce, as a node would under a storm of
        senders from the same account."""

        def __init__(self, inner: EmbeddedChain) -> None:
            self.inner = inner
            self.sent = 0

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

        def send_raw_transaction(self, raw: bytes) -> bytes:
            self.sent += 1
            raise TransactionRejectedError("nonce too low")

    refusing = Refusing(chain)
    sender = Transactor(refusing, dev_signer(1))  # type: ignore[arg-type]
    with pytest.raises(TransactionRejectedError, match="nonce"):
        sender.send(dev_account(2).address, b"", gas=21_000, value=1)
    assert refusing.sent == NONCE_RETRIES + 1


def test_wrong_chain_id_is_rejected(chain: EmbeddedChain) -> None:
    with pytest.raises(TransactionRejectedError, match="wrong chain id 1, expected 31337"):
        chain.send_raw_transaction(signed_transfer(dev_account(1), chain, chainId=1))
    assert chain.get_nonce(dev_account(1).address) == 0


def test_gas_above_the_block_limit_is_rejected(chain: EmbeddedChain) -> None:
    with pytest.raises(TransactionRejectedError, match="block gas limit"):
        chain.send_raw_transaction(signed_transfer(dev_account(1), chain, gas=60_000_001))


_NOISE = random.Random(3009)  # fixed seed: the same "random" bytes every run


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00",
        b"\x02",
        b"\xc0",
        b"garbage",
        _NOISE.randbytes(120),
        b"\x02" + _NOISE.randbytes(100),
    ],
    ids=["empty", "zero", "bare-type", "empty-list", "text", "random", "typed-random"],
)
def test_garbage_is_rejected(chain: EmbeddedChain, raw: bytes) -> None:
    with pytest.raises(TransactionRejectedError, match="invalid transaction"):
        chain.send_raw_transaction(raw)
    assert chain.mine() == 0


def test_transaction_from_an_unfunded_sender_is_dropped(chain: EmbeddedChain) -> None:
    broke = Transactor(chain, LocalSigner.random())
    tx_hash = broke.send(dev_account(9).address, b"", gas=21_000, value=0)  # accepted...

    with pytest.raises(TransactionRejectedError, match="dropped"):
        chain.wait_for_receipt(tx_hash)  # ...but it cannot pay for its gas
    assert chain.get_nonce(broke.address) == 0


def test_tampered_signature_is_rejected(chain: EmbeddedChain) -> None:
    raw = bytearray(signed_transfer(dev_account(1), chain))
    raw[-1] ^= 0x01  # one bit of s: the signature now recovers some unfunded stranger
    bystander = Transactor(chain, dev_signer(2))
    before = bystander.send(dev_account(9).address, b"", gas=21_000, value=1)

    tx_hash = chain.send_raw_transaction(bytes(raw))

    with pytest.raises(TransactionRejectedError, match="dropped"):
        chain.wait_for_receipt(tx_hash)
    assert chain.wait_for_receipt(before).status
    assert chain.get_nonce(dev_account(1).address) == 0


def test_resubmitting_a_transaction_is_idempotent(chain: EmbeddedChain) -> None:
    account = dev_account(1)
    raw = signed_transfer(account, chain, value=ETHER)
    balance = chain.get_balance(dev_account(9).address)

    first = chain.send_raw_transaction(raw)
    assert chain.send_raw_transaction(raw) == first  # while pending
    assert chain.mine() == 1
    assert chain.send_raw_transaction(raw) == first  # once mined

    assert chain.mine() == 0
    assert chain.wait_for_receipt(first).status
    assert chain.get_nonce(account.address) == 1
    assert chain.get_balance(dev_account(9).address) == balance + ETHER
    assert chain.block_number() == 1


def test_transaction_that_became_unaffordable_is_dropped(chain: EmbeddedChain) -> None:
    """Two transactions each affordable alone, not together: the second is dropped at mining
    time, and the rest of the batch is mined."""
    poor: LocalAccount = Account.create()
    bank = Transactor(chain, dev_signer(1))
    bank.transact(poor.address, b"", gas=21_000, value=ETHER)
    max_fee, _ = chain.fee_params()
    gas_money = 21_000 * max_fee
    bystander = Transactor(chain, dev_signer(2))

    before = bystander.send(dev_account(9).address, b"", gas=21_000, value=1)
    spends_all = chain.send_raw_transaction(signed_transfer(poor, chain, value=ETHER - gas_money))
    unaffordable = chain.send_raw_transaction(signed_transfer(poor, chain, value=0))
    after = bystander.send(dev_account(9).address, b"", gas=21_000, value=1)

    with pytest.raises(TransactionRejectedError, match="dropped"):
        chain.wait_for_receipt(unaffordable)
    mined = [chain.wait_for_receipt(h) for h in (before, spends_all, after)]
    assert all(r.status for r in mined)
    assert len({r.block_number for r in mined}) == 1
    assert chain.get_receipt(unaffordable) is None
    assert chain.get_nonce(poor.address) == 1  # the dropped nonce is free again
    assert 0 < chain.get_balance(poor.address) < gas_money
    # The chain goes on: the next transaction from the same sender uses the freed nonce.
    bank.transact(poor.address, b"", gas=21_000, value=ETHER)
    retry = chain.wait_for_receipt(
        chain.send_raw_transaction(signed_transfer(poor, chain, value=0))
    )
    assert retry.status


# -- timestamps --------------------------------------------------------------------------------


def test_blocks_may_share_a_timestamp_when_the_clock_stands_still(
    chain: EmbeddedChain, clock: FakeClock
) -> None:
    sender = Transactor(chain, dev_signer(1))
    receipts = [sender.transact(dev_account(2).address, b"", gas=21_000, value=1) for _ in range(4)]

    assert [r.block_number for r in receipts] == [1, 2, 3, 4]
    assert {r.block_timestamp for r in receipts} == {T0}
    assert chain.latest_timestamp() == chain.next_timestamp() == T0


def test_next_timestamp_follows_the_clock(chain: EmbeddedChain, clock: FakeClock) -> None:
    sender = Transactor(chain, dev_signer(1))
    clock.now = T0 + 100.9

    assert chain.next_timestamp() == T0 + 100  # whole seconds
    assert chain.latest_timestamp() == T0  # nothing mined yet
    receipt = sender.transact(dev_account(2).address, b"", gas=21_000, value=1)
    assert receipt.block_timestamp == T0 + 100
    assert chain.latest_timestamp() == T0 + 100


def test_timestamps_never_go_backwards(chain: EmbeddedChain, clock: FakeClock) -> None:
    sender = Transactor(chain, dev_signer(1))
    clock.now = T0 + 50
    sender.transact(dev_account(2).address, b"", gas=21_000, value=1)

    clock.now = T0  # the clock jumps back (NTP, a test, ...)

    assert chain.next_timestamp() == T0 + 50
    receipt = sender.transact(dev_account(2).address, b"", gas=21_000, value=1)
    assert receipt.block_timestamp == T0 + 50
    clock.now = T0 + 51
    assert sender.transact(dev_account(2).address, b"", gas=21_000, value=1).block_timestamp == (
        T0 + 51
    )


def test_empty_blocks_take_the_clock_too(chain: EmbeddedChain, clock: FakeClock) -> None:
    clock.now = T0 + 7
    chain.mine(allow_empty=True)
    assert (chain.block_number(), chain.latest_timestamp()) == (1, T0 + 7)


# -- concurrency -------------------------------------------------------------------------------

THREADS = 8
PER_THREAD = 25


@pytest.fixture
def shared_sender(chain: EmbeddedChain) -> Transactor:
    return Transactor(chain, dev_signer(1))


def test_threads_sharing_one_transactor(
    chain: EmbeddedChain, contract: Contract, shared_sender: Transactor
) -> None:
    start = chain.block_number()
    barrier = threading.Barrier(THREADS)
    receipts: list[Receipt] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        try:
            barrier.wait()
            for i in range(PER_THREAD):
                key = index * PER_THREAD + i
                data = contract.encode("store", key, key + 1)
                receipt = shared_sender.transact(contract.address, data, gas=STORE_GAS)
                with lock:
                    receipts.append(receipt)
        except BaseException as error:  # reported below, in the test's own thread
            with lock:
                errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    total = THREADS * PER_THREAD
    assert errors == []
    assert len(receipts) == total
    assert len({r.tx_hash for r in receipts}) == total
    assert all(r.status for r in receipts)
    # Nonces 0..199 each used once: the account's nonce advanced by exactly 200.
    assert chain.get_nonce(shared_sender.address) == total
    assert chain.block_number() - start <= total  # group commit may batch; never more blocks
    assert [contract.call("stored", k) for k in range(0, total, 37)] == [
        k + 1 for k in range(0, total, 37)
    ]


# -- group commit: a block waits for announced transactions --------------------------------------


def test_block_waits_for_an_announced_transaction(clock: FakeClock) -> None:
    """A settlement being prepared (`expecting`) when another waits for its receipt lands in
    the same block; each still gets its own receipt."""
    chain = EmbeddedChain(clock=clock, group_wait=5)
    first, second = dev_account(1), dev_account(2)
    start = chain.block_number()
    announced = threading.Event()
    receipts: dict[str, Receipt] = {}

    def prepare_then_send() -> None:
        with chain.expecting():
            announced.set()
            threading.Event().wait(0.05)  # checking and signing, while the other waits
            tx = chain.send_raw_transaction(signed_transfer(second, chain))
        receipts["second"] = chain.wait_for_receipt(tx)

    worker = threading.Thread(target=prepare_then_send)
    worker.start()
    announced.wait(5)
    receipts["first"] = chain.wait_for_receipt(
        chain.send_raw_transaction(signed_transfer(first, chain))
    )
    worker.join(10)
    assert receipts["first"].tx_hash != receipts["second"].tx_hash
    assert receipts["first"].block_number == receipts["second"].block_number == start + 1
    assert chain.block_number() == start + 1


def test_group_wait_bounds_the_wait(clock: FakeClock) -> None:
    """An announced transaction that does not come holds the block `group_wait`, no longer;
    with nothing announced, a receipt is mined at once."""
    chain = EmbeddedChain(clock=clock, group_wait=0.05)
    alone = chain.send_raw_transaction(signed_transfer(dev_account(1), chain))
    assert chain.wait_for_receipt(alone).block_number == 1
    with chain.expecting():
        tx = chain.send_raw_transaction(signed_transfer(dev_account(1), chain))
        started = time.monotonic()
        receipt = chain.wait_for_receipt(tx)
        waited = time.monotonic() - started
    assert receipt.block_number == 2
    assert 0.04 <= waited < 2


def test_group_size_bounds_the_wait(clock: FakeClock) -> None:
    chain = EmbeddedChain(clock=clock, group_size=2, group_wait=30)
    with chain.expecting():
        chain.send_raw_transaction(signed_transfer(dev_account(1), chain))
        tx = chain.send_raw_transaction(signed_transfer(dev_account(2), chain))
        started = time.monotonic()
        chain.wait_for_receipt(tx)
        assert time.monotonic() - started < 5
