"""The Ethereum JSON-RPC methods of `agent-pay node`, over an `EmbeddedChain` and its index.

Each `rpc_<method>` coroutine takes the request's params list; blocking work (calls, estimates,
accepting a transaction, scanning logs) runs in worker threads. Reads of "latest" see the last
block in the index, so a receipt, the block it names and the state after it agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from anyio import to_thread
from eth_utils import to_checksum_address

from agent_pay.chain.base import (
    ChainError,
    ContractRevertError,
    TransactionRejectedError,
)
from agent_pay.chain.embedded import EmbeddedChain, MinedBlock
from agent_pay.node.execution import ZERO_ADDRESS, call, capped_gas, revert_failure
from agent_pay.node.fees import PRIORITY_FEE, fee_history
from agent_pay.node.index import (
    BlockIndex,
    block_json,
    collect_logs,
    log_matcher,
    receipt_json,
    transaction_json,
)
from agent_pay.node.jsonrpc import (
    INVALID_PARAMS,
    RpcFailure,
    as_address,
    as_bytes,
    as_quantity,
    calldata_floor,
    param,
    to_hex,
)

__all__ = ["DEFAULT_GAS_CAP", "PRIORITY_FEE", "NodeApi"]

MAX_LOG_BLOCKS = 100_000
DEFAULT_GAS_CAP = 50_000_000
"""The most gas `eth_call` and `eth_estimateGas` run with, whatever the caller names (geth's
``--rpc.gascap`` is the same idea and default): a call is CPU time on the node's one thread."""


class NodeApi:
    """The JSON-RPC methods. `handle` is the one entry point; blocking work runs in threads.

    Args:
        chain: the chain to serve.
        index: its mined blocks (fed by the chain's `on_block`).
        wake_miner: called after each accepted transaction.
        client_version: what `web3_clientVersion` answers.
        receipt_wait: seconds `eth_getTransactionReceipt` waits for a pending transaction to be
            mined before answering null (pollers then need fewer round trips).
        gas_cap: the most gas `eth_call` and `eth_estimateGas` run with; a call naming more runs
            with the cap, as geth does.
    """

    def __init__(
        self,
        chain: EmbeddedChain,
        index: BlockIndex,
        *,
        wake_miner: Callable[[], None],
        client_version: str,
        receipt_wait: float = 0.5,
        gas_cap: int = DEFAULT_GAS_CAP,
    ) -> None:
        if gas_cap < 21_000:
            raise ValueError(f"gas_cap must be at least 21000, got {gas_cap}")
        self.gas_cap = gas_cap
        self.chain = chain
        self.index = index
        self._wake_miner = wake_miner
        self.client_version = client_version
        self._receipt_wait = receipt_wait
        self.failure: BaseException | None = None  # set when the node can no longer mine
        self._sent: dict[bytes, Any] = {}  # accepted, not yet mined or dropped: hash -> tx
        self._decoder = chain.evm.get_vm(chain.head).get_transaction_builder()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._new_block: asyncio.Event | None = None
        self._methods: dict[str, Callable[[list[Any]], Awaitable[Any]]] = {
            name.removeprefix("rpc_"): getattr(self, name)
            for name in dir(self)
            if name.startswith("rpc_")
        }

    @property
    def chain_id(self) -> int:
        return self.chain.chain_id

    # -- plumbing ------------------------------------------------------------------------------

    def block_mined(self) -> None:
        """Called from the mining thread after a block is indexed: wake receipt waiters."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._signal_block)

    def _signal_block(self) -> None:
        if self._new_block is not None:
            self._new_block.set()
        self._new_block = asyncio.Event()

    def has_pending(self) -> bool:
        """Whether transactions submitted here still wait to be mined."""
        return bool(self._sent)

    def prune_sent(self) -> None:
        """Forget submitted transactions that are now mined or were dropped (mining thread)."""
        for tx_hash in list(self._sent):
            if self.index.locate(tx_hash) is not None or not self.chain.is_pending(tx_hash):
                self._sent.pop(tx_hash, None)

    async def handle(self, method: Any, params: Any) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first request, or served anew on another loop
            self._loop = loop
            self._new_block = asyncio.Event()
        if not isinstance(method, str) or method not in self._methods:
            raise RpcFailure(-32601, f"the method {method} does not exist/is not available")
        if params is None:
            params = []
        if not isinstance(params, list):
            raise RpcFailure(INVALID_PARAMS, "params must be an array")
        return await self._methods[method](params)

    def _block(self, ident: Any) -> MinedBlock:
        """The block a block parameter names (tag, number, hash, or an EIP-1898 object)."""
        if isinstance(ident, dict):
            if "blockHash" in ident:
                return self._block_by_hash(as_bytes(ident["blockHash"], "block hash", 32))
            ident = ident.get("blockNumber", "latest")
        if ident in ("latest", "pending", "safe", "finalized", None):
            return self.index.latest
        if ident == "earliest":
            return self._require(self.index.by_number(0))
        if isinstance(ident, str) and len(ident) == 66:
            return self._block_by_hash(as_bytes(ident, "block hash", 32))
        return self._require(self.index.by_number(as_quantity(ident, "block number")))

    def _block_by_hash(self, block_hash: bytes) -> MinedBlock:
        return self._require(self.index.by_hash(block_hash))

    @staticmethod
    def _require(mined: MinedBlock | None) -> MinedBlock:
        if mined is None:
            raise RpcFailure(-32000, "header not found")
        return mined

    def _state(self, ident: Any) -> Any:
        return self.chain.evm.get_vm(self._block(ident).block.header).state

    def _next_base_fee(self) -> int:
        return int(self.chain.evm.header.base_fee_per_gas)

    # -- identity ------------------------------------------------------------------------------

    async def rpc_web3_clientVersion(self, params: list[Any]) -> str:
        return self.client_version

    async def rpc_net_version(self, params: list[Any]) -> str:
        return str(self.chain.chain_id)

    async def rpc_net_listening(self, params: list[Any]) -> bool:
        return True

    async def rpc_net_peerCount(self, params: list[Any]) -> str:
        return "0x0"

    async def rpc_eth_chainId(self, params: list[Any]) -> str:
        return hex(self.chain.chain_id)

    async def rpc_eth_syncing(self, params: list[Any]) -> bool:
        return False

    async def rpc_eth_mining(self, params: list[Any]) -> bool:
        return True

    async def rpc_eth_accounts(self, params: list[Any]) -> list[str]:
        return []  # the node holds no keys: sign locally and use eth_sendRawTransaction

    async def rpc_eth_coinbase(self, params: list[Any]) -> str:
        return to_hex(ZERO_ADDRESS)

    async def rpc_eth_hashrate(self, params: list[Any]) -> str:
        return "0x0"

    # -- state ---------------------------------------------------------------------------------

    async def rpc_eth_blockNumber(self, params: list[Any]) -> str:
        return hex(self.index.latest.number)

    async def rpc_eth_getBalance(self, params: list[Any]) -> str:
        address = as_address(param(params, 0))
        state = self._state(param(params, 1, "latest"))
        return hex(state.get_balance(address))

    async def rpc_eth_getTransactionCount(self, params: list[Any]) -> str:
        address = as_address(param(params, 0))
        block = param(params, 1, "latest")
        if block == "pending":
            return hex(self.chain.get_nonce(to_checksum_address(address)))
        return hex(self._state(block).get_nonce(address))

    async def rpc_eth_getCode(self, params: list[Any]) -> str:
        address = as_address(param(params, 0))
        return to_hex(self._state(param(params, 1, "latest")).get_code(address))

    async def rpc_eth_getStorageAt(self, params: list[Any]) -> str:
        address = as_address(param(params, 0))
        slot = as_quantity(param(params, 1), "storage slot")
        if slot >= 2**256:
            raise RpcFailure(INVALID_PARAMS, f"invalid storage slot: {param(params, 1)!r}")
        value = self._state(param(params, 2, "latest")).get_storage(address, slot)
        return to_hex(int(value).to_bytes(32, "big"))

    async def rpc_eth_call(self, params: list[Any]) -> str:
        tx = param(params, 0)
        if not isinstance(tx, dict):
            raise RpcFailure(INVALID_PARAMS, "the call must be a transaction object")
        if len(params) > 2 and params[2]:
            raise RpcFailure(INVALID_PARAMS, "state overrides are not supported")
        mined = self._block(param(params, 1, "latest"))
        return await to_thread.run_sync(call, self.chain, tx, mined, self.gas_cap)

    async def rpc_eth_estimateGas(self, params: list[Any]) -> str:
        tx = param(params, 0)
        if not isinstance(tx, dict):
            raise RpcFailure(INVALID_PARAMS, "the estimate must be a transaction object")
        data = as_bytes(tx.get("input") or tx.get("data") or "0x")
        sender = to_checksum_address(as_address(tx["from"]) if tx.get("from") else ZERO_ADDRESS)
        to = to_checksum_address(as_address(tx["to"], "to")) if tx.get("to") else None
        value = as_quantity(tx.get("value", 0), "value")
        cap = capped_gas(tx, self.gas_cap)
        try:
            gas = await to_thread.run_sync(
                lambda: self.chain.estimate_gas(to, data, sender, value, gas=cap)
            )
        except ContractRevertError as exc:
            raise revert_failure(exc.reason, exc.data) from None
        except TransactionRejectedError as exc:
            raise RpcFailure(-32000, str(exc)) from None
        return hex(max(gas, calldata_floor(data)))  # EIP-7623: the floor is what it costs

    # -- fees ----------------------------------------------------------------------------------

    async def rpc_eth_gasPrice(self, params: list[Any]) -> str:
        return hex(self._next_base_fee() + PRIORITY_FEE)

    async def rpc_eth_maxPriorityFeePerGas(self, params: list[Any]) -> str:
        return hex(PRIORITY_FEE)

    async def rpc_eth_blobBaseFee(self, params: list[Any]) -> str:
        return "0x1"

    async def rpc_eth_feeHistory(self, params: list[Any]) -> dict[str, Any]:
        count = min(as_quantity(param(params, 0), "block count"), 1024)
        newest = self._block(param(params, 1, "latest")).number
        oldest = max(0, newest - count + 1)
        blocks = [self._require(self.index.by_number(n)) for n in range(oldest, newest + 1)]
        following = self.index.by_number(newest + 1)
        next_base = (
            int(following.block.header.base_fee_per_gas) if following else self._next_base_fee()
        )
        return fee_history(blocks, next_base, param(params, 2, []))

    # -- transactions --------------------------------------------------------------------------

    async def rpc_eth_sendRawTransaction(self, params: list[Any]) -> str:
        if self.failure is not None:
            raise RpcFailure(-32603, f"the node cannot mine: {self.failure}")
        raw = as_bytes(param(params, 0), "raw transaction")
        try:
            tx_hash = await to_thread.run_sync(self.chain.send_raw_transaction, raw)
        except TransactionRejectedError as exc:
            raise RpcFailure(-32000, str(exc)) from None
        if self.chain.is_pending(tx_hash) and tx_hash not in self._sent:
            self._sent[tx_hash] = self._decoder.decode(raw)
        self._wake_miner()
        return to_hex(tx_hash)

    async def rpc_eth_getTransactionByHash(self, params: list[Any]) -> dict[str, Any] | None:
        tx_hash = as_bytes(param(params, 0), "transaction hash", 32)
        found = self.index.locate(tx_hash)
        if found is not None:
            mined, position = found
            tx = mined.block.transactions[position]
            return transaction_json(tx, mined.receipts[position].sender, mined, position)
        pending = self._sent.get(tx_hash)
        if pending is not None:
            return transaction_json(pending, to_checksum_address(pending.sender))
        return None

    async def rpc_eth_getTransactionReceipt(self, params: list[Any]) -> dict[str, Any] | None:
        tx_hash = as_bytes(param(params, 0), "transaction hash", 32)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._receipt_wait
        while True:
            found = self.index.locate(tx_hash)
            if found is not None:
                return receipt_json(*found)
            remaining = deadline - loop.time()
            if tx_hash not in self._sent or remaining <= 0 or self._new_block is None:
                return None
            try:
                await asyncio.wait_for(self._new_block.wait(), remaining)
            except TimeoutError:
                return None

    async def rpc_eth_getBlockReceipts(self, params: list[Any]) -> list[dict[str, Any]]:
        mined = self._block(param(params, 0))
        return [receipt_json(mined, i) for i in range(len(mined.receipts))]

    async def rpc_eth_getTransactionByBlockNumberAndIndex(
        self, params: list[Any]
    ) -> dict[str, Any] | None:
        return self._tx_at(self._block(param(params, 0)), param(params, 1))

    async def rpc_eth_getTransactionByBlockHashAndIndex(
        self, params: list[Any]
    ) -> dict[str, Any] | None:
        mined = self._block_by_hash(as_bytes(param(params, 0), "block hash", 32))
        return self._tx_at(mined, param(params, 1))

    def _tx_at(self, mined: MinedBlock, position: Any) -> dict[str, Any] | None:
        index = as_quantity(position, "index")
        if index >= len(mined.receipts):
            return None
        tx = mined.block.transactions[index]
        return transaction_json(tx, mined.receipts[index].sender, mined, index)

    # -- blocks and logs -----------------------------------------------------------------------

    async def rpc_eth_getBlockByNumber(self, params: list[Any]) -> dict[str, Any] | None:
        ident = param(params, 0)
        full = bool(param(params, 1, False))
        try:
            mined = self._block(ident)
        except RpcFailure as exc:
            if exc.code == -32000:
                return None  # a block that does not exist (yet) is null, as geth answers
            raise
        return block_json(mined, full)

    async def rpc_eth_getBlockByHash(self, params: list[Any]) -> dict[str, Any] | None:
        mined = self.index.by_hash(as_bytes(param(params, 0), "block hash", 32))
        return None if mined is None else block_json(mined, bool(param(params, 1, False)))

    async def rpc_eth_getBlockTransactionCountByNumber(self, params: list[Any]) -> str:
        return hex(len(self._block(param(params, 0)).receipts))

    async def rpc_eth_getBlockTransactionCountByHash(self, params: list[Any]) -> str:
        return hex(len(self._block_by_hash(as_bytes(param(params, 0), "block hash", 32)).receipts))

    async def rpc_eth_getUncleCountByBlockNumber(self, params: list[Any]) -> str:
        return "0x0"

    async def rpc_eth_getLogs(self, params: list[Any]) -> list[dict[str, Any]]:
        query = param(params, 0)
        if not isinstance(query, dict):
            raise RpcFailure(INVALID_PARAMS, "the filter must be an object")
        if query.get("blockHash") is not None:
            if query.get("fromBlock") is not None or query.get("toBlock") is not None:
                raise RpcFailure(INVALID_PARAMS, "blockHash excludes fromBlock and toBlock")
            blocks = [self._block_by_hash(as_bytes(query["blockHash"], "block hash", 32))]
        else:
            first = self._block(query.get("fromBlock") or "latest").number
            last = self._block(query.get("toBlock") or "latest").number
            if last - first >= MAX_LOG_BLOCKS:
                raise RpcFailure(-32005, f"query spans more than {MAX_LOG_BLOCKS} blocks")
            blocks = [self._require(self.index.by_number(n)) for n in range(first, last + 1)]
        try:
            match = log_matcher(query.get("address"), query.get("topics"))
        except (TypeError, ValueError) as exc:
            raise RpcFailure(INVALID_PARAMS, str(exc)) from None
        return await to_thread.run_sync(collect_logs, blocks, match)

    # -- development ---------------------------------------------------------------------------

    async def rpc_evm_mine(self, params: list[Any]) -> str:
        """Mine a block now (empty if nothing is pending), as anvil and hardhat do."""
        if self.failure is not None:
            raise RpcFailure(-32603, f"the node cannot mine: {self.failure}")
        try:
            await to_thread.run_sync(lambda: self.chain.mine(allow_empty=True))
        except ChainError as exc:
            raise RpcFailure(-32603, str(exc)) from None
        return "0x0"
