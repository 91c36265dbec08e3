"""The `Chain` contract, one suite for every backend (eth-tester style).

`ChainContract` holds the tests; each backend subclasses it and provides a `chain` fixture:
the embedded py-evm chain, in this process and in a child (`ProcessChain`), `JsonRpcChain` on
anvil, and `JsonRpcChain` on `agent-pay node`.
What differs between backends on purpose (the embedded chain batches a group of transactions
into one block, anvil mines one block per transaction) is tested in the backend's own class.

Backends may share one chain across a class's tests, so tests use fresh accounts or compare
deltas, never absolute dev-account balances or nonces.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import rlp
from eth_abi import encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_canonical_address, to_checksum_address

from agent_pay.chain.base import (
    Chain,
    ChainError,
    ContractRevertError,
    TransactionRejectedError,
)
from agent_pay.chain.compiler import hashmap_slot
from agent_pay.chain.contract import Contract, Transactor, deploy_contract
from agent_pay.chain.devkeys import dev_account, dev_signer
from agent_pay.chain.embedded import EmbeddedChain
from agent_pay.chain.process import ProcessChain
from agent_pay.chain.rpc import JsonRpcChain, NodeUnavailableError, RpcError
from agent_pay.chain.stablecoin import Stablecoin, StablecoinSpec
from agent_pay.node.anvil import free_port
from agent_pay.node.node import Node
from agent_pay.signing import (
    LocalSigner,
    TokenDomain,
    TransferAuthorization,
    random_nonce,
    sign_transfer_authorization,
)
from agent_pay.testing import CompiledContract, compile_tiny, signed_transfer

ETHER = 10**18
STORE_GAS = 100_000


@pytest.fixture(scope="module")
def tiny() -> CompiledContract:
    return compile_tiny()


@pytest.fixture(scope="module")
def tiny_stored_slot(tiny: CompiledContract) -> int:
    """Where the compiler put `stored`, from its storage layout."""
    slot: int = tiny.storage_layout["stored"]["slot"]
    return slot


def create_address(sender: str, nonce: int) -> str:
    """Where a CREATE from `sender` at `nonce` puts the contract (the yellow paper's rule)."""
    return to_checksum_address(keccak(rlp.encode([to_canonical_address(sender), nonce]))[12:])


class ChainContract:
    """What every `Chain` backend must do. Subclasses provide the `chain` fixture."""

    @pytest.fixture
    def chain(self) -> Chain:
        raise NotImplementedError

    @pytest.fixture
    def bank(self, chain: Chain) -> Transactor:
        return Transactor(chain, dev_signer(5))

    @pytest.fixture
    def fresh_account(self, bank: Transactor) -> LocalAccount:
        """A new account holding 1 ETH, with nonce 0."""
        account: LocalAccount = Account.create()
        assert bank.transact(account.address, b"", gas=21_000, value=ETHER).status
        return account

    @pytest.fixture
    def fresh(self, chain: Chain, fresh_account: LocalAccount) -> Transactor:
        """A transactor sending from `fresh_account`."""
        return Transactor(chain, LocalSigner(fresh_account))

    @pytest.fixture
    def contract(self, fresh: Transactor, tiny: CompiledContract) -> Contract:
        return deploy_contract(fresh, tiny.abi, tiny.bytecode, False)

    # -- identity

    def test_is_a_chain_with_anvils_chain_id(self, chain: Chain) -> None:
        assert isinstance(chain, Chain)
        assert chain.chain_id == 31337

    def test_dev_accounts_are_funded_and_strangers_are_empty(self, chain: Chain) -> None:
        for index in range(10):
            assert chain.get_balance(dev_account(index).address) > 1_000 * ETHER
        stranger = Account.create().address
        assert chain.get_balance(stranger) == 0
        assert chain.get_nonce(stranger) == 0
        assert chain.get_code(stranger) == b""

    def test_timestamps_follow_the_wall_clock(self, chain: Chain, bank: Transactor) -> None:
        receipt = bank.transact(dev_account(9).address, b"", gas=21_000, value=1)
        now = time.time()

        assert receipt.block_number <= chain.block_number()
        assert abs(receipt.block_timestamp - now) < 5
        assert chain.latest_timestamp() <= chain.next_timestamp()
        assert abs(chain.next_timestamp() - now) < 5

    # -- transfers, nonces, fees

    def test_a_transfer_moves_exactly_its_value(self, chain: Chain, fresh: Transactor) -> None:
        to = Account.create().address
        before = chain.get_balance(fresh.address)
        start = chain.block_number()

        receipt = fresh.transact(to, b"", gas=21_000, value=12345)

        assert receipt.status
        assert receipt.gas_used == 21_000
        assert (receipt.sender, receipt.to, receipt.contract_address) == (fresh.address, to, None)
        assert receipt.block_number > start
        assert receipt.logs == ()
        assert receipt.revert_reason is None
        assert chain.get_receipt(receipt.tx_hash) == receipt
        assert chain.get_balance(to) == 12345
        spent = before - chain.get_balance(fresh.address)
        max_fee, _ = chain.fee_params()
        assert 12345 < spent <= 12345 + 21_000 * max_fee * 2
        assert chain.get_nonce(fresh.address) == 1

    def test_fee_params_get_a_transaction_mined(
        self, chain: Chain, fresh: Transactor, fresh_account: LocalAccount
    ) -> None:
        max_fee, priority_fee = chain.fee_params()
        assert max_fee >= priority_fee > 0
        raw = signed_transfer(
            fresh_account, chain, maxFeePerGas=max_fee, maxPriorityFeePerGas=priority_fee
        )
        assert chain.wait_for_receipt(chain.send_raw_transaction(raw)).status

    def test_legacy_transactions_are_accepted(
        self, chain: Chain, fresh: Transactor, fresh_account: LocalAccount
    ) -> None:
        max_fee, _ = chain.fee_params()
        tx = {
            "nonce": 0,
            "to": dev_account(9).address,
            "value": 5,
            "gas": 21_000,
            "gasPrice": max_fee,
            "chainId": chain.chain_id,
        }
        raw = bytes(fresh_account.sign_transaction(tx).raw_transaction)
        assert chain.wait_for_receipt(chain.send_raw_transaction(raw)).status

    def test_a_used_nonce_is_rejected(
        self, chain: Chain, fresh: Transactor, fresh_account: LocalAccount
    ) -> None:
        # (A nonce from the future is refused by the embedded chain and queued by real nodes.)
        account = fresh_account
        raw = signed_transfer(account, chain)
        assert chain.wait_for_receipt(chain.send_raw_transaction(raw)).status
        with pytest.raises(TransactionRejectedError):
            chain.send_raw_transaction(signed_transfer(account, chain, nonce=0, value=2))
        assert chain.get_nonce(account.address) == 1

    def test_wrong_chain_id_is_rejected(
        self, chain: Chain, fresh: Transactor, fresh_account: LocalAccount
    ) -> None:
        with pytest.raises(TransactionRejectedError):
            chain.send_raw_transaction(signed_transfer(fresh_account, chain, chainId=1))
        assert chain.get_nonce(fresh.address) == 0

    def test_garbage_is_rejected(self, chain: Chain) -> None:
        for raw in (b"", b"\x02", b"garbage", b"\xc0"):
            with pytest.raises(TransactionRejectedError):
                chain.send_raw_transaction(raw)

    def test_gas_below_the_calldata_floor_is_rejected(
        self, chain: Chain, fresh: Transactor, fresh_account: LocalAccount
    ) -> None:
        # EIP-7623: 100 non-zero bytes of calldata cost at least 21,000 + 4,000 gas.
        # Refused at once (embedded, our node) or accepted and then dropped (anvil 1.7).
        raw = signed_transfer(fresh_account, chain, data=b"\x01" * 100, gas=22_000)
        with pytest.raises(TransactionRejectedError):
            chain.wait_for_receipt(chain.send_raw_transaction(raw), timeout=5)
        assert chain.get_nonce(fresh.address) == 0

    def test_a_resubmitted_transaction_executes_once(
        self, chain: Chain, fresh: Transactor, fresh_account: LocalAccount
    ) -> None:
        to = Account.create().address
        raw = signed_transfer(fresh_account, chain, to=to, value=7)
        tx_hash = chain.send_raw_transaction(raw)
        assert chain.wait_for_receipt(tx_hash).status

        try:
            again = chain.send_raw_transaction(raw)
        except TransactionRejectedError:
            pass  # a node may refuse it as "nonce too low": just as good
        else:
            assert again == tx_hash

        assert chain.get_balance(to) == 7
        assert chain.get_nonce(fresh.address) == 1

    def test_pending_transactions_count_toward_the_nonce(
        self, chain: Chain, fresh: Transactor
    ) -> None:
        hashes = [fresh.send(dev_account(9).address, b"", gas=21_000, value=1) for _ in range(3)]
        assert chain.get_nonce(fresh.address) == 3
        receipts = [chain.wait_for_receipt(h) for h in hashes]
        assert all(r.status for r in receipts)
        assert [r.tx_hash for r in receipts] == hashes
        numbers = [r.block_number for r in receipts]
        assert numbers == sorted(numbers)

    def test_waiting_for_an_unknown_transaction_fails(self, chain: Chain) -> None:
        unknown = b"\x12" * 32
        assert chain.get_receipt(unknown) is None
        with pytest.raises(ChainError):
            chain.wait_for_receipt(unknown, timeout=3)

    # -- contracts

    def test_deployment_lands_where_create_says(
        self, chain: Chain, fresh: Transactor, tiny: CompiledContract
    ) -> None:
        first = deploy_contract(fresh, tiny.abi, tiny.bytecode, False)
        second = deploy_contract(fresh, tiny.abi, tiny.bytecode, False)

        assert first.address == create_address(fresh.address, 0)
        assert second.address == create_address(fresh.address, 1)
        assert len(chain.get_code(first.address)) > 100

    def test_failed_deployment_raises_with_the_reason(
        self, fresh: Transactor, tiny: CompiledContract
    ) -> None:
        with pytest.raises(ContractRevertError, match="tiny: constructor says no"):
            deploy_contract(fresh, tiny.abi, tiny.bytecode, True, gas=500_000)

    def test_transact_call_and_events(self, contract: Contract, fresh: Transactor) -> None:
        receipt = contract.transact(fresh, "store", 7, 42)

        assert receipt.status
        assert receipt.to == contract.address
        assert contract.events(receipt, "Stored") == [
            {"event": "Stored", "key": 7, "value": 42, "by": fresh.address}
        ]
        [log] = receipt.logs
        assert log.address == contract.address
        assert len(log.topics) == 2
        assert contract.call("stored", 7) == 42
        doubled, caller = contract.call("pair", 21, sender=fresh.address)
        assert (doubled, caller) == (42, fresh.address)

    def test_logs_by_address_topics_and_range(
        self, chain: Chain, contract: Contract, fresh: Transactor
    ) -> None:
        first = contract.transact(fresh, "store", 1, 10)
        second = contract.transact(fresh, "store", 2, 20)
        stored, key_two = first.logs[0].topics[0], (2).to_bytes(32, "big")

        logs = chain.get_logs(contract.address)

        assert logs == [*first.logs, *second.logs]
        assert [(log.transaction_hash, log.block_number) for log in logs] == [
            (first.tx_hash, first.block_number),
            (second.tx_hash, second.block_number),
        ]
        assert chain.get_logs(contract.address, [None, key_two]) == list(second.logs)
        assert chain.get_logs(contract.address, [stored], from_block=second.block_number) == list(
            second.logs
        )
        assert chain.get_logs(contract.address, to_block=first.block_number) == list(first.logs)
        assert chain.get_logs(contract.address, [stored, key_two, key_two]) == []
        assert chain.get_logs(Account.create().address) == []

    def test_a_reverting_call_raises_with_reason_and_data(self, contract: Contract) -> None:
        with pytest.raises(ContractRevertError, match="tiny: not positive") as caught:
            contract.call("positive", 0)
        assert caught.value.reason == "tiny: not positive"
        assert caught.value.data[:4] == bytes.fromhex("08c379a0")

    def test_estimates_and_reverting_estimates(
        self, chain: Chain, contract: Contract, fresh: Transactor
    ) -> None:
        estimate = chain.estimate_gas(
            contract.address, contract.encode("store", 1, 1), fresh.address
        )
        assert 40_000 < estimate < STORE_GAS
        with pytest.raises(ContractRevertError, match="tiny: boom"):
            chain.estimate_gas(contract.address, contract.encode("boom"), fresh.address)

    def test_a_reverted_transaction_is_mined_with_its_reason(
        self, chain: Chain, contract: Contract, fresh: Transactor
    ) -> None:
        before = chain.get_balance(fresh.address)

        receipt = contract.transact(fresh, "boom", gas=STORE_GAS, check=False)

        assert not receipt.status
        assert receipt.revert_reason == "tiny: boom"
        assert receipt.logs == ()
        assert 21_000 < receipt.gas_used < STORE_GAS
        assert chain.get_balance(fresh.address) < before  # gas is paid all the same
        assert chain.get_nonce(fresh.address) == 2

    # -- storage

    def test_storage_holds_what_the_contract_stored(
        self, chain: Chain, contract: Contract, fresh: Transactor, tiny_stored_slot: int
    ) -> None:
        contract.transact(fresh, "store", 7, 42)

        def stored(key: int) -> int:
            return chain.get_storage_at(
                contract.address, hashmap_slot(tiny_stored_slot, key.to_bytes(32, "big"))
            )

        assert stored(7) == 42 == contract.call("stored", 7)
        assert stored(8) == 0
        assert chain.get_storage_at(contract.address, tiny_stored_slot) == 0  # a HashMap's base
        assert chain.get_storage_at(Account.create().address, 0) == 0  # no account
        assert chain.get_storage_at(fresh.address, 0) == 0  # an account without storage

    @pytest.mark.parametrize("slot", [-1, 2**256])
    def test_a_storage_slot_out_of_range_is_refused(self, chain: Chain, slot: int) -> None:
        with pytest.raises(ValueError, match="out of range"):
            chain.get_storage_at(dev_account(0).address, slot)

    def test_stablecoin_storage_reads_equal_its_getters(
        self, chain: Chain, fresh: Transactor
    ) -> None:
        token = Stablecoin.deploy(fresh, StablecoinSpec("Conformance Dollar", "CDX"))
        assert token.slots is not None  # the node holds the very code we compiled
        by_call = Stablecoin(token.contract, token.asset)
        payer, payee = LocalSigner(Account.create()), Account.create().address
        token.mint(fresh, payer.address, 123_456)
        now = chain.next_timestamp()
        auth = TransferAuthorization(payer.address, payee, 456, now - 60, now + 600, random_nonce())
        domain = TokenDomain(token.asset.eip712_name, "1", chain.chain_id, token.address)
        signature = sign_transfer_authorization(payer, domain, auth)
        data = token.transfer_with_authorization_data(
            auth.from_, auth.to, auth.value, auth.valid_after, auth.valid_before, auth.nonce,
            signature,
        )  # fmt: skip
        assert fresh.transact(token.address, data, gas=150_000).status

        holders = [payer.address, payee, fresh.address, Account.create().address]
        assert [token.balance_of(h) for h in holders] == [123_000, 456, 0, 0]
        assert [by_call.balance_of(h) for h in holders] == [123_000, 456, 0, 0]
        for authorizer, nonce, used in [
            (payer.address, auth.nonce, True),
            (payer.address, random_nonce(), False),
            (payee, auth.nonce, False),
        ]:
            assert token.authorization_state(authorizer, nonce) is used
            assert by_call.authorization_state(authorizer, nonce) is used

    # -- concurrency

    def test_threads_sharing_one_transactor(
        self, chain: Chain, contract: Contract, fresh: Transactor
    ) -> None:
        threads, per_thread = 4, 8
        barrier = threading.Barrier(threads)
        errors: list[BaseException] = []
        statuses: list[bool] = []

        def work(index: int) -> None:
            try:
                barrier.wait()
                for i in range(per_thread):
                    key = index * per_thread + i
                    data = contract.encode("store", key, key + 1)
                    statuses.append(fresh.transact(contract.address, data, gas=STORE_GAS).status)
            except BaseException as error:
                errors.append(error)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)

        assert errors == []
        assert statuses == [True] * threads * per_thread
        assert chain.get_nonce(fresh.address) == 1 + threads * per_thread
        assert [contract.call("stored", k) for k in (0, 13, 31)] == [1, 14, 32]


# -- backends ------------------------------------------------------------------------------------


class TestEmbeddedChain(ChainContract):
    @pytest.fixture
    def chain(self) -> Chain:
        return EmbeddedChain()

    def test_a_group_of_transactions_is_mined_in_one_block(
        self, chain: Chain, fresh: Transactor
    ) -> None:
        hashes = [fresh.send(dev_account(9).address, b"", gas=21_000, value=1) for _ in range(5)]
        receipts = [chain.wait_for_receipt(h) for h in hashes]
        assert len({r.block_number for r in receipts}) == 1


@pytest.fixture(scope="module")
def process_chain() -> Iterator[ProcessChain]:
    with ProcessChain() as chain:
        yield chain


@pytest.mark.slow
class TestProcessChain(ChainContract):
    @pytest.fixture
    def chain(self, process_chain: ProcessChain) -> Chain:
        return process_chain

    def test_a_group_of_transactions_is_mined_in_one_block(
        self, chain: Chain, fresh: Transactor
    ) -> None:
        hashes = [fresh.send(dev_account(9).address, b"", gas=21_000, value=1) for _ in range(5)]
        receipts = [chain.wait_for_receipt(h) for h in hashes]
        assert len({r.block_number for r in receipts}) == 1


@pytest.fixture(scope="module")
def anvil_chain(anvil_url: str) -> Iterator[JsonRpcChain]:
    with JsonRpcChain(anvil_url) as chain:
        yield chain


class TestAnvil(ChainContract):
    @pytest.fixture
    def chain(self, anvil_chain: JsonRpcChain) -> Chain:
        return anvil_chain

    def test_the_node_is_anvil(self, chain: JsonRpcChain) -> None:
        assert chain.client_version().startswith("anvil/")

    def test_anvil_mines_one_block_per_transaction(self, chain: Chain, fresh: Transactor) -> None:
        hashes = [fresh.send(dev_account(9).address, b"", gas=21_000, value=1) for _ in range(3)]
        receipts = [chain.wait_for_receipt(h) for h in hashes]
        assert len({r.block_number for r in receipts}) == 3

    def test_anvil_blocks_share_a_second_rather_than_run_ahead(
        self, chain: Chain, fresh: Transactor
    ) -> None:
        """Fifty blocks in well under a second all carry (about) the wall clock: anvil does not
        push each block a second past its parent, so EIP-3009 windows keep real time."""
        hashes = [fresh.send(dev_account(9).address, b"", gas=21_000, value=1) for _ in range(50)]
        receipts = [chain.wait_for_receipt(h) for h in hashes]
        assert len({r.block_number for r in receipts}) == 50
        assert receipts[-1].block_timestamp - receipts[0].block_timestamp <= 2
        assert receipts[-1].block_timestamp <= time.time() + 1


@pytest.fixture(scope="module")
def node_chain() -> Iterator[JsonRpcChain]:
    with Node.open(None) as node, node.serve(port=0) as url, JsonRpcChain(url) as chain:
        yield chain


class TestAgentPayNode(ChainContract):
    @pytest.fixture
    def chain(self, node_chain: JsonRpcChain) -> Chain:
        return node_chain

    def test_the_node_is_ours(self, chain: JsonRpcChain) -> None:
        assert chain.client_version().startswith("agent-pay-node/")

    def test_the_node_refuses_a_storage_slot_past_uint256(self, chain: JsonRpcChain) -> None:
        with pytest.raises(RpcError, match="invalid storage slot") as caught:
            chain.request("eth_getStorageAt", dev_account(0).address, hex(2**256), "latest")
        assert caught.value.code == -32602

    def test_concurrent_transactions_share_blocks(self, chain: Chain) -> None:
        senders = [Transactor(chain, LocalSigner.random()) for _ in range(6)]
        bank = Transactor(chain, dev_signer(6))
        funding = [bank.send(s.address, b"", gas=21_000, value=ETHER) for s in senders]
        assert all(chain.wait_for_receipt(h).status for h in funding)
        hashes: list[bytes] = []
        threads = [
            threading.Thread(
                target=lambda s=s: hashes.append(
                    s.send(dev_account(9).address, b"", gas=21_000, value=1)
                )
            )
            for s in senders
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        receipts = [chain.wait_for_receipt(h) for h in hashes]
        assert all(r.status for r in receipts)
        assert len({r.block_number for r in receipts}) < len(receipts)


class TestUnreachableNode:
    def test_every_call_raises_node_unavailable(self) -> None:
        chain = JsonRpcChain(f"http://127.0.0.1:{free_port()}", timeout=1, chain_id=31337)
        for read in (
            chain.block_number,
            chain.next_timestamp,
            chain.fee_params,
            lambda: chain.get_balance(dev_account(0).address),
            lambda: chain.send_raw_transaction(b"\x02"),
        ):
            with pytest.raises(NodeUnavailableError):
                read()
        assert issubclass(NodeUnavailableError, ChainError)


def scripted(answer: Any) -> JsonRpcChain:
    """A JsonRpcChain whose node answers every request with `answer` (an httpx.Response, or an
    exception to raise)."""

    def handle(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    return JsonRpcChain("http://node.test", chain_id=31337, transport=httpx.MockTransport(handle))


class TestMisbehavingNode:
    @pytest.mark.parametrize(
        "answer",
        [
            httpx.Response(502, text="<html>bad gateway</html>"),
            httpx.Response(200, json={"jsonrpc": "2.0", "id": 1}),
            httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "error": "nope"}),
            httpx.ReadTimeout("slow"),
            httpx.ConnectError("refused"),
        ],
        ids=["http-502", "no-result", "bad-error", "timeout", "refused"],
    )
    def test_trouble_is_node_unavailable(self, answer: Any) -> None:
        with pytest.raises(NodeUnavailableError):
            scripted(answer).block_number()

    def test_a_malformed_result_is_node_unavailable(self) -> None:
        result = {"blockNumber": "0x1", "status": "yes"}
        chain = scripted(httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "result": result}))
        with pytest.raises(NodeUnavailableError, match="malformed"):
            chain.get_receipt(b"\x01" * 32)
        with pytest.raises(NodeUnavailableError, match="malformed"):
            chain.latest_timestamp()

    def test_a_json_rpc_error_to_a_read_is_an_rpc_error(self) -> None:
        error = {"code": -32000, "message": "header not found"}
        chain = scripted(httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "error": error}))
        with pytest.raises(RpcError, match="header not found") as caught:
            chain.get_balance(dev_account(0).address)
        assert caught.value.code == -32000

    def test_a_revert_with_nested_data_is_decoded(self) -> None:
        data = "0x08c379a0" + encode(["string"], ["tiny: boom"]).hex()
        error = {"code": -32603, "message": "execution reverted", "data": {"data": data}}
        chain = scripted(httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "error": error}))
        with pytest.raises(ContractRevertError, match="tiny: boom"):
            chain.call(dev_account(0).address, b"")

    @pytest.mark.parametrize(
        ("result", "value"), [("0x" + "00" * 31 + "2a", 42), ("0x2a", 42), ("0x0", 0)]
    )
    def test_a_storage_word_padded_or_trimmed_is_read(self, result: str, value: int) -> None:
        chain = scripted(httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "result": result}))
        assert chain.get_storage_at(dev_account(0).address, 5) == value

    def test_a_malformed_storage_word_is_node_unavailable(self) -> None:
        chain = scripted(httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "result": "0xzz"}))
        with pytest.raises(NodeUnavailableError, match="malformed"):
            chain.get_storage_at(dev_account(0).address, 5)

    def test_an_already_known_transaction_is_its_hash(self) -> None:
        error = {"code": -32000, "message": "already known"}
        chain = scripted(httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "error": error}))
        assert chain.send_raw_transaction(b"\x02raw") == keccak(b"\x02raw")
