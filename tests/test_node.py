"""`agent-pay node`: persistence across restarts, and its JSON-RPC face as clients see it.

The `Chain` contract itself is checked against the node in `test_chain_conformance.py`; here
are the data directory, the raw JSON-RPC protocol (errors, batches), and what web3.py sees.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account

from agent_pay import stack
from agent_pay.chain.channel import DEFAULT_GRACE_PERIOD
from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_account, dev_signer
from agent_pay.chain.rpc import JsonRpcChain
from agent_pay.chain.stablecoin import Stablecoin
from agent_pay.node import deployment
from agent_pay.node.datadir import DataDirError
from agent_pay.node.deployment import DEV_CHANNEL_MANAGER_ADDRESS, DEV_TOKEN_ADDRESSES
from agent_pay.node.node import Node

web3 = pytest.importorskip("web3", reason="web3.py is a test-only dependency")
Web3 = web3.Web3


def rpc(url: str, body: Any) -> Any:
    return httpx.post(url, content=json.dumps(body), timeout=10).json()


def call(method: str, *params: Any, id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": list(params)}


# -- the data directory ------------------------------------------------------------------------


def activity(chain: JsonRpcChain) -> dict[str, Any]:
    """Some transactions of every kind; returns what a restart must keep."""
    usdx = Stablecoin.at(chain, DEV_TOKEN_ADDRESSES["USDX"])
    owner = Transactor(chain, dev_signer(0))
    holder = Account.create().address
    mint = usdx.mint(owner, holder, 1_234_567)
    transfer = Transactor(chain, dev_signer(3)).transact(holder, b"", gas=21_000, value=10**18)
    return {
        "holder": holder,
        "usdx": usdx.balance_of(holder),
        "eth": chain.get_balance(holder),
        "head": chain.block_number(),
        "hash": chain.request("eth_getBlockByNumber", "latest", False)["hash"],
        "receipts": [mint.tx_hash, transfer.tx_hash],
    }


def test_a_restart_keeps_every_balance_block_and_receipt(tmp_path: Path) -> None:
    with (
        Node.open(tmp_path, channel_grace_period=600) as node,
        node.serve(port=0) as url,
        JsonRpcChain(url) as chain,
    ):
        assert node.start.created
        before = activity(chain)

    with Node.open(tmp_path) as node, node.serve(port=0) as url, JsonRpcChain(url) as chain:
        assert not node.start.created
        assert node.start.restored_blocks == before["head"]
        assert set(node.tokens) == {"USDX", "CNYX"}
        assert node.channel_manager is not None
        assert node.channel_manager.grace_period == 600  # the contract's, not the default
        usdx = node.tokens["USDX"]
        assert usdx.balance_of(before["holder"]) == before["usdx"] == 1_234_567
        assert chain.get_balance(before["holder"]) == before["eth"] == 10**18
        assert chain.block_number() == before["head"]
        assert chain.request("eth_getBlockByNumber", "latest", False)["hash"] == before["hash"]
        for tx_hash in before["receipts"]:
            receipt = chain.get_receipt(tx_hash)
            assert receipt is not None
            assert receipt.status
        # ... and the chain goes on from there.
        assert (
            Transactor(chain, dev_signer(3))
            .transact(before["holder"], b"", gas=21_000, value=1)
            .status
        )


def test_a_block_torn_by_a_crash_is_dropped(tmp_path: Path) -> None:
    with Node.open(tmp_path) as node:
        head = node.chain.block_number()
    log = tmp_path / "blocks.jsonl"
    intact = log.read_bytes()
    log.write_bytes(intact + b'{"n":99,"t":1,"h":"0x')  # the node died mid-write

    with Node.open(tmp_path) as node:
        assert node.start.restored_blocks == head
    assert log.read_bytes() == intact


def test_an_edited_history_is_refused(tmp_path: Path) -> None:
    with Node.open(tmp_path):
        pass
    log = tmp_path / "blocks.jsonl"
    lines = log.read_text().splitlines()
    record = json.loads(lines[-1])
    record["t"] += 1  # another timestamp: another block hash
    log.write_text("\n".join([*lines[:-1], json.dumps(record)]) + "\n")

    with pytest.raises(DataDirError, match="replays to another hash"):
        Node.open(tmp_path)


def test_the_node_deploys_as_the_stack_does(tmp_path: Path) -> None:
    assert deployment.DEPLOYER_INDEX == stack.DEPLOYER_INDEX
    with Node.open(None) as node:
        assert {s: t.address for s, t in node.tokens.items()} == dict(DEV_TOKEN_ADDRESSES)
        assert node.tokens["USDX"].contract.call("owner") == dev_account(0).address
        assert node.channel_manager is not None  # right after the tokens, from account #0
        assert node.channel_manager.address == DEV_CHANNEL_MANAGER_ADDRESS
        assert node.channel_manager.grace_period == DEFAULT_GRACE_PERIOD


def test_one_data_directory_one_node(tmp_path: Path) -> None:
    with Node.open(tmp_path), pytest.raises(DataDirError, match="in use by another"):
        Node.open(tmp_path)
    with Node.open(tmp_path):
        pass  # released when the first one closed


def test_a_data_directory_keeps_its_chain_id(tmp_path: Path) -> None:
    with Node.open(tmp_path, chain_id=1337) as node:
        assert node.chain.chain_id == 1337
    with pytest.raises(DataDirError, match="holds chain 1337"):
        Node.open(tmp_path)


# -- JSON-RPC --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_url() -> Iterator[str]:
    with Node.open(None) as node, node.serve(port=0) as url:
        yield url


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", -32700),
        (b'{"jsonrpc": "2.0", "id": 1}', -32600),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "eth_chainId"}', -32600),
        (b"[]", -32600),
        (json.dumps(call("eth_nope")).encode(), -32601),
        (json.dumps(call("eth_getBalance", "0xnope", "latest")).encode(), -32602),
        (json.dumps(call("eth_getBalance")).encode(), -32602),
        (json.dumps(call("eth_getBlockByNumber", "soon", False)).encode(), -32602),
        (json.dumps(call("eth_getBalance", "0x" + "11" * 20, "0x99999")).encode(), -32000),
        (json.dumps(call("eth_sendRawTransaction", "0x02c0")).encode(), -32000),
    ],
    ids=[
        "unreadable",
        "no-method",
        "wrong-version",
        "empty-batch",
        "unknown-method",
        "bad-address",
        "missing-param",
        "bad-block-tag",
        "future-block",
        "bad-transaction",
    ],
)
def test_errors_are_json_rpc_error_objects(node_url: str, body: bytes, code: int) -> None:
    answer = httpx.post(node_url, content=body, timeout=10).json()
    assert answer["error"]["code"] == code
    assert answer["error"]["message"]
    assert "result" not in answer


def test_batches_answer_in_order_and_notifications_not_at_all(node_url: str) -> None:
    answers = rpc(
        node_url,
        [
            call("eth_chainId", id=7),
            {"jsonrpc": "2.0", "method": "eth_blockNumber", "params": []},  # a notification
            call("net_version", id="eight"),
            call("eth_nope", id=9),
        ],
    )
    assert [a["id"] for a in answers] == [7, "eight", 9]
    assert answers[0]["result"] == "0x7a69"
    assert answers[1]["result"] == "31337"
    assert answers[2]["error"]["code"] == -32601
    assert httpx.get(node_url, timeout=10).json()["chainId"] == 31337


def test_a_revert_is_code_3_with_the_revert_data(node_url: str) -> None:
    usdx = DEV_TOKEN_ADDRESSES["USDX"]
    mint = "0x40c10f19" + "00" * 12 + "11" * 20 + "00" * 31 + "01"  # mint(0x11.., 1)
    answer = rpc(node_url, call("eth_call", {"to": usdx, "data": mint}, "latest"))
    assert answer["error"]["code"] == 3
    assert answer["error"]["message"] == "execution reverted: Stablecoin: caller is not the owner"
    assert answer["error"]["data"].startswith("0x08c379a0")


@pytest.fixture
def node_chain(node_url: str) -> Iterator[JsonRpcChain]:
    with JsonRpcChain(node_url) as chain:
        yield chain


def test_what_web3_sees(node_url: str, node_chain: JsonRpcChain) -> None:
    w3 = Web3(Web3.HTTPProvider(node_url))
    usdx = Stablecoin.at(node_chain, DEV_TOKEN_ADDRESSES["USDX"])
    token = w3.eth.contract(address=usdx.address, abi=usdx.contract.abi)
    owner, holder = dev_account(0), Account.create().address
    assert w3.is_connected()
    assert w3.eth.chain_id == 31337
    assert w3.client_version.startswith("agent-pay-node/")
    assert w3.eth.syncing is False
    assert w3.eth.accounts == []

    tx = token.functions.mint(holder, 42).build_transaction(
        {"from": owner.address, "nonce": w3.eth.get_transaction_count(owner.address, "pending")}
    )  # estimates gas, asks for fees
    tx_hash = w3.eth.send_raw_transaction(owner.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10, poll_latency=0.01)

    assert receipt["status"] == 1
    assert receipt["from"] == owner.address
    assert receipt["to"] == usdx.address
    assert receipt["gasUsed"] <= receipt["cumulativeGasUsed"]
    assert receipt["effectiveGasPrice"] > 0
    [event] = token.events.Transfer().process_receipt(receipt)
    assert event["args"]["receiver"] == holder
    assert event["args"]["value"] == 42
    block = w3.eth.get_block(receipt["blockNumber"], full_transactions=True)
    assert block["hash"] == receipt["blockHash"]
    assert tx_hash in [t["hash"] for t in block["transactions"]]
    assert w3.eth.get_block(block["hash"])["number"] == block["number"]
    mined = w3.eth.get_transaction(tx_hash)
    assert (mined["blockNumber"], mined["from"], mined["nonce"]) == (
        receipt["blockNumber"],
        owner.address,
        tx["nonce"],
    )
    assert token.functions.balanceOf(holder).call() == 42
    assert token.functions.balanceOf(holder).call(block_identifier=block["number"] - 1) == 0
    logs = w3.eth.get_logs(
        {
            "address": usdx.address,
            "fromBlock": block["number"],
            "toBlock": block["number"],
            "topics": [None, None, "0x" + "00" * 12 + holder[2:].lower()],
        }
    )
    assert [log["transactionHash"] for log in logs] == [tx_hash]
    history = w3.eth.fee_history(2, "latest", [50])
    assert len(history["baseFeePerGas"]) == 3
    assert w3.eth.gas_price >= w3.eth.get_block("latest")["baseFeePerGas"]
    assert w3.eth.max_priority_fee == 10**9
    assert w3.eth.get_code(usdx.address) == usdx.chain.get_code(usdx.address)
    slot_zero = w3.eth.get_storage_at(usdx.address, 0)
    assert len(slot_zero) == 32


def test_a_pending_transaction_is_visible_and_its_receipt_waits_for_it() -> None:
    with Node.open(None, batch_window=0.3) as node, node.serve(port=0) as url:
        w3 = Web3(Web3.HTTPProvider(url))
        sender = dev_account(4)
        tx = {
            "to": dev_account(5).address,
            "value": 1,
            "gas": 21_000,
            "gasPrice": w3.eth.gas_price,
            "nonce": w3.eth.get_transaction_count(sender.address),
            "chainId": 31337,
        }
        tx_hash = w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)

        pending = w3.eth.get_transaction(tx_hash)
        assert pending["blockNumber"] is None
        assert pending["from"] == sender.address
        assert w3.eth.get_transaction_count(sender.address, "pending") == tx["nonce"] + 1
        started = time.monotonic()
        receipt = rpc(url, call("eth_getTransactionReceipt", "0x" + bytes(tx_hash).hex()))
        assert receipt["result"] is not None  # held until mined rather than answered null
        assert time.monotonic() - started < 2


def test_concurrent_senders_are_mined_together(node_chain: JsonRpcChain) -> None:
    chain = node_chain
    senders = [dev_signer(i) for i in (6, 7, 8)]
    hashes: list[bytes] = []

    def send(index: int) -> None:
        transactor = Transactor(chain, senders[index])
        hashes.append(transactor.send(dev_account(9).address, b"", gas=21_000, value=1))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    blocks = {chain.wait_for_receipt(h).block_number for h in hashes}
    assert len(blocks) < 3
