"""Any Ethereum JSON-RPC node as a `Chain`: anvil, hardhat, `agent-pay node`, a public network.

A plain httpx client speaks JSON-RPC 2.0 (`agent_pay.chain.rpc_transport`); nothing here
estimates gas or signs (the `Transactor` does that). Errors are mapped onto the chain layer's
tree so the facilitator can tell a payment problem from node trouble:

    ChainError
    ├── NodeUnavailableError        unreachable, timed out, not JSON-RPC (the facilitator: 503)
    ├── RpcError                    the node answered a JSON-RPC error to a read
    ├── ContractRevertError         eth_call / eth_estimateGas reverted (reason decoded)
    └── TransactionRejectedError    eth_sendRawTransaction refused, or the node dropped it

Reads that only bound a validity window are cached briefly (`next_timestamp`, `fee_params`): a
settlement then costs one `eth_sendRawTransaction` plus receipt polls, nothing else.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from eth_utils import keccak, to_checksum_address

from agent_pay.chain.base import (
    ChainError,
    ContractRevertError,
    Log,
    Receipt,
    TransactionRejectedError,
    decode_revert_reason,
)
from agent_pay.chain.rpc_codec import hex_data, parse_bytes, parse_int, parse_log, tx_object
from agent_pay.chain.rpc_transport import (
    NodeUnavailableError,
    RpcError,
    RpcTransport,
    as_revert,
    parsing,
)

__all__ = ["JsonRpcChain", "NodeUnavailableError", "RpcError"]

_CACHE_SECONDS = 1.0  # how stale a cached fee or head timestamp may be
_DROP_CHECK_SECONDS = 0.5  # while waiting for a receipt, ask this often whether the tx still exists
_DEFAULT_PRIORITY_FEE = 10**9  # 1 gwei, for nodes without eth_maxPriorityFeePerGas


class JsonRpcChain:
    """A `Chain` over Ethereum JSON-RPC at `url`. Thread-safe.

    Args:
        url: the node's HTTP endpoint, e.g. "http://127.0.0.1:8545".
        timeout: seconds for each request (connect, read, write).
        chain_id: skip asking the node for it (otherwise asked once, on first use).
        clock: wall clock for `next_timestamp`; injectable for tests.
        transport: an httpx transport (tests); a pooled HTTP transport by default.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        chain_id: int | None = None,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url
        self._rpc = RpcTransport(url, timeout=timeout, transport=transport)
        self._chain_id = chain_id
        self._clock = clock
        self._lock = threading.Lock()
        self._head_ts: tuple[float, int] | None = None  # (read at, latest block timestamp)
        self._fees: tuple[float, tuple[int, int]] | None = None  # (read at, fee params)
        self._block_ts: OrderedDict[str, int] = OrderedDict()  # block hash -> timestamp

    def __repr__(self) -> str:
        return f"JsonRpcChain({self.url!r})"

    def close(self) -> None:
        self._rpc.close()

    def __enter__(self) -> JsonRpcChain:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------------------------

    def request(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call; return its `result`. Raise NodeUnavailableError or RpcError."""
        return self._rpc.request(method, *params)

    # -- reads ---------------------------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = parse_int(self.request("eth_chainId"))
        return self._chain_id

    def client_version(self) -> str:
        """What the node calls itself (`web3_clientVersion`), e.g. "anvil/v1.7.1"."""
        return str(self.request("web3_clientVersion"))

    def block_number(self) -> int:
        return parse_int(self.request("eth_blockNumber"))

    def latest_timestamp(self) -> int:
        block = self.request("eth_getBlockByNumber", "latest", False)
        with parsing("eth_getBlockByNumber"):
            timestamp = parse_int(block["timestamp"])
        with self._lock:
            self._head_ts = (time.monotonic(), timestamp)
        return timestamp

    def next_timestamp(self) -> int:
        # A node mines at its wall clock; blocks may share a second (anvil, our node) but never
        # go back. A cached head is at most a second stale, and only matters if the chain runs
        # ahead of the clock.
        with self._lock:
            cached = self._head_ts
        if cached is None or time.monotonic() - cached[0] > _CACHE_SECONDS:
            head = self.latest_timestamp()
        else:
            head = cached[1]
        return max(head, int(self._clock()))

    def get_balance(self, address: str) -> int:
        return parse_int(self.request("eth_getBalance", to_checksum_address(address), "latest"))

    def get_nonce(self, address: str) -> int:
        return parse_int(
            self.request("eth_getTransactionCount", to_checksum_address(address), "pending")
        )

    def get_code(self, address: str) -> bytes:
        code = self.request("eth_getCode", to_checksum_address(address), "latest")
        with parsing("eth_getCode"):
            return parse_bytes(code)

    def get_storage_at(self, address: str, slot: int) -> int:
        if not 0 <= slot < 2**256:
            raise ValueError(f"storage slot out of range: {slot}")
        word = self.request("eth_getStorageAt", to_checksum_address(address), hex(slot), "latest")
        with parsing("eth_getStorageAt"):
            return parse_int(word)  # a 32-byte word; some nodes trim it to a quantity

    def call(self, to: str, data: bytes, sender: str | None = None) -> bytes:
        return self._call(tx_object(to, data, sender), "latest")

    def estimate_gas(self, to: str | None, data: bytes, sender: str, value: int = 0) -> int:
        tx = tx_object(to, data, sender, value=value)
        try:
            return parse_int(self.request("eth_estimateGas", tx))
        except RpcError as exc:
            revert = as_revert(exc)
            if revert is not None:
                raise revert from exc
            raise TransactionRejectedError(exc.message) from exc

    def fee_params(self) -> tuple[int, int]:
        with self._lock:
            cached = self._fees
        if cached is not None and time.monotonic() - cached[0] <= _CACHE_SECONDS:
            return cached[1]
        # eth_feeHistory's last base fee is the next block's: exactly what a new tx must pay.
        history = self.request("eth_feeHistory", "0x1", "latest", [])
        with parsing("eth_feeHistory"):
            base_fee = parse_int(history["baseFeePerGas"][-1])
        try:
            priority = parse_int(self.request("eth_maxPriorityFeePerGas"))
        except RpcError:
            priority = _DEFAULT_PRIORITY_FEE
        fees = (2 * base_fee + priority, priority)
        with self._lock:
            self._fees = (time.monotonic(), fees)
        return fees

    def get_logs(
        self,
        address: str,
        topics: Sequence[bytes | None] = (),
        from_block: int = 0,
        to_block: int | None = None,
    ) -> list[Log]:
        query = {
            "address": to_checksum_address(address),
            "topics": [None if t is None else hex_data(t) for t in topics],
            "fromBlock": hex(from_block),
            "toBlock": "latest" if to_block is None else hex(to_block),
        }
        found = self.request("eth_getLogs", query)
        with parsing("eth_getLogs"):
            return [parse_log(entry) for entry in found]

    def get_receipt(self, tx_hash: bytes) -> Receipt | None:
        raw = self.request("eth_getTransactionReceipt", hex_data(tx_hash))
        with parsing("eth_getTransactionReceipt"):
            if raw is None or raw.get("blockNumber") is None:
                return None
            return self._receipt(raw)

    # -- writes --------------------------------------------------------------------------------

    def send_raw_transaction(self, raw: bytes) -> bytes:
        try:
            tx_hash = self.request("eth_sendRawTransaction", hex_data(raw))
        except RpcError as exc:
            message = exc.message.lower()
            if "already known" in message or message.startswith("known transaction"):
                return bytes(keccak(raw))  # resubmission of a transaction the node holds
            if "fee" in message:
                with self._lock:
                    self._fees = None  # our cached fee was too low: ask again next time
            raise TransactionRejectedError(exc.message) from exc
        with parsing("eth_sendRawTransaction"):
            return parse_bytes(tx_hash)

    def wait_for_receipt(self, tx_hash: bytes, timeout: float = 30.0) -> Receipt:
        deadline = time.monotonic() + timeout
        next_check = time.monotonic() + _DROP_CHECK_SECONDS
        pause = 0.002
        while True:
            receipt = self.get_receipt(tx_hash)
            if receipt is not None:
                return receipt
            now = time.monotonic()
            if now >= next_check:
                next_check = now + _DROP_CHECK_SECONDS
                if self.request("eth_getTransactionByHash", hex_data(tx_hash)) is None:
                    # Mined between the two reads, or gone from the node's pool: look once more.
                    receipt = self.get_receipt(tx_hash)
                    if receipt is not None:
                        return receipt
                    raise TransactionRejectedError(
                        f"the node no longer knows transaction {hex_data(tx_hash)}: dropped"
                    )
            if now >= deadline:
                raise TimeoutError(f"transaction {hex_data(tx_hash)} not mined after {timeout} s")
            time.sleep(min(pause, max(0.0, deadline - now)))
            pause = min(pause * 2, 0.05)

    # -- internals -----------------------------------------------------------------------------

    def _call(self, tx: dict[str, str], block: str) -> bytes:
        try:
            output = self.request("eth_call", tx, block)
        except RpcError as exc:
            revert = as_revert(exc)
            if revert is not None:
                raise revert from exc
            raise
        with parsing("eth_call"):
            return parse_bytes(output)

    def _receipt(self, raw: dict[str, Any]) -> Receipt:
        status = parse_int(raw["status"]) == 1
        block_number = parse_int(raw["blockNumber"])
        timestamp = raw.get("blockTimestamp")
        block_ts = (
            parse_int(timestamp)
            if timestamp is not None
            else self._block_timestamp(raw["blockHash"])
        )
        logs = tuple(parse_log(entry) for entry in raw.get("logs") or [])
        created = raw.get("contractAddress")
        return Receipt(
            tx_hash=parse_bytes(raw["transactionHash"]),
            block_number=block_number,
            block_timestamp=block_ts,
            status=status,
            gas_used=parse_int(raw["gasUsed"]),
            sender=to_checksum_address(raw["from"]),
            to=to_checksum_address(raw["to"]) if raw.get("to") else None,
            contract_address=to_checksum_address(created) if created and status else None,
            logs=logs,
            revert_reason=None if status else self._revert_reason(raw),
        )

    def _block_timestamp(self, block_hash: str) -> int:
        with self._lock:
            if block_hash in self._block_ts:
                return self._block_ts[block_hash]
        block = self.request("eth_getBlockByHash", block_hash, False)
        timestamp = parse_int(block["timestamp"])
        with self._lock:
            self._block_ts[block_hash] = timestamp
            while len(self._block_ts) > 256:
                self._block_ts.popitem(last=False)
        return timestamp

    def _revert_reason(self, raw: dict[str, Any]) -> str | None:
        """Why a mined transaction failed: the receipt's `revertReason` where the node gives one
        (ours, besu), else the transaction re-run as a call on the state after its block."""
        given = raw.get("revertReason")
        if isinstance(given, str) and given:
            if given.startswith("0x"):
                try:
                    return decode_revert_reason(parse_bytes(given)) or given
                except ValueError:
                    return given
            return given
        try:
            tx = self.request("eth_getTransactionByHash", raw["transactionHash"])
            call = {
                "from": tx["from"],
                "data": tx.get("input") or tx.get("data") or "0x",
                "value": tx.get("value", "0x0"),
                "gas": tx["gas"],
            }
            if tx.get("to"):
                call["to"] = tx["to"]
            self._call(call, raw["blockNumber"])
        except ContractRevertError as revert:
            return revert.reason
        except ChainError:
            return None
        if parse_int(raw["gasUsed"]) >= parse_int(tx["gas"]):
            return "OutOfGas"
        return None  # succeeds when re-run: the failure depended on its place in the block
