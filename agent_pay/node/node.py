"""`Node`: the embedded py-evm chain as a local Ethereum node, persistent, mining on its own.

    with Node.open(Path(".agent-pay/node")) as node:      # restores, or creates and deploys
        with node.serve("127.0.0.1", 8545) as url:          # JSON-RPC on 127.0.0.1
            ...                                              # any process can use `url`

A background miner mines whatever is pending every few milliseconds, all of it in one block
(group commit, as the embedded chain does in-process). Every block goes to the data directory
before its receipt is served; on the next start the recorded blocks are replayed.

On first start the node deploys the default stablecoins, then the channel contract, from
throwaway dev account #0, so they land at the same addresses as on a fresh anvil after
`agent-pay deploy`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from agent_pay.boundary import ServerLimits
from agent_pay.chain.base import ChainError
from agent_pay.chain.channel import DEFAULT_GRACE_PERIOD, ChannelManager
from agent_pay.chain.devkeys import dev_accounts
from agent_pay.chain.embedded import DEFAULT_CHAIN_ID, EmbeddedChain, MinedBlock
from agent_pay.chain.stablecoin import Stablecoin
from agent_pay.node.datadir import BlockRecord, DataDir, DataDirError, Genesis
from agent_pay.node.deployment import (
    DEV_CHANNEL_MANAGER_ADDRESS,
    DEV_TOKEN_ADDRESSES,
    deploy_channel_manager,
    deploy_default_stablecoins,
    find_stablecoins,
)
from agent_pay.node.index import BlockIndex
from agent_pay.node.jsonrpc import create_rpc_app
from agent_pay.node.methods import DEFAULT_GAS_CAP, NodeApi
from agent_pay.serving import serve_app

__all__ = ["DEV_FUNDS", "Node", "NodeStart"]

log = logging.getLogger("agent_pay.node")

DEV_FUNDS = 10_000 * 10**18  # each throwaway dev account's ETH at genesis, as anvil
CLIENT_VERSION = "agent-pay-node/0.1.0/py-evm"


@dataclass(frozen=True, slots=True)
class NodeStart:
    """How the node came up: what it restored or created."""

    created: bool  # a new chain (and the contracts were deployed), not a restored one
    restored_blocks: int
    restore_seconds: float


class Node:
    """A persistent, self-mining EmbeddedChain with a JSON-RPC face. Use `Node.open`."""

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        chain_id: int = DEFAULT_CHAIN_ID,
        clock: Callable[[], float] = time.time,
        batch_window: float = 0.002,
        fsync: bool = False,
        channel_grace_period: int = DEFAULT_GRACE_PERIOD,
        gas_cap: int = DEFAULT_GAS_CAP,
    ) -> None:
        self._gas_cap = gas_cap
        self._datadir = DataDir(data_dir, fsync=fsync) if data_dir is not None else None
        self._clock = clock
        self._batch_window = batch_window
        self._replaying = False
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._miner: threading.Thread | None = None
        self._requested_chain_id = chain_id
        self._grace_period = channel_grace_period
        self.chain: EmbeddedChain
        self.index: BlockIndex
        self.api: NodeApi
        self.tokens: dict[str, Stablecoin] = {}
        self.channel_manager: ChannelManager | None = None
        """The channel contract; None on a chain created before the node deployed one."""
        self.start: NodeStart

    @classmethod
    def open(
        cls,
        data_dir: Path | None = None,
        *,
        chain_id: int = DEFAULT_CHAIN_ID,
        clock: Callable[[], float] = time.time,
        batch_window: float = 0.002,
        fsync: bool = False,
        channel_grace_period: int = DEFAULT_GRACE_PERIOD,
        gas_cap: int = DEFAULT_GAS_CAP,
    ) -> Node:
        """Open (restore or create) the chain in `data_dir`; `None` keeps it in memory only.
        The miner runs until `close()`; after a transaction arrives it waits `batch_window`
        seconds for others to join the block. A new chain's channel contract gets
        `channel_grace_period` (a restored chain keeps the one it has). `eth_call` and
        `eth_estimateGas` run with at most `gas_cap` gas."""
        node = cls(
            data_dir,
            chain_id=chain_id,
            clock=clock,
            batch_window=batch_window,
            fsync=fsync,
            channel_grace_period=channel_grace_period,
            gas_cap=gas_cap,
        )
        try:
            node._open()
        except BaseException:
            node.close()
            raise
        return node

    @property
    def data_dir(self) -> Path | None:
        return self._datadir.path if self._datadir else None

    def _open(self) -> None:
        started = time.perf_counter()
        datadir = self._datadir
        if datadir is not None:
            datadir.__enter__()
        created = datadir is None or datadir.is_new()
        if created:
            genesis = Genesis(
                chain_id=self._requested_chain_id,
                timestamp=int(self._clock()),
                funded=tuple(a.address for a in dev_accounts()),
                funds=DEV_FUNDS,
            )
        else:
            assert datadir is not None
            genesis = datadir.read_genesis()
            if genesis.chain_id != self._requested_chain_id:
                raise DataDirError(
                    f"{datadir.path} holds chain {genesis.chain_id}, not "
                    f"{self._requested_chain_id}: pass that chain id or use another directory"
                )
        self.chain = EmbeddedChain(
            chain_id=genesis.chain_id,
            funded=genesis.funded,
            funds=genesis.funds,
            clock=self._clock,
            genesis_timestamp=genesis.timestamp,
            on_block=self._on_block,
        )
        genesis_block = self.chain.evm.get_canonical_block_by_number(0)
        self.index = BlockIndex(MinedBlock(genesis_block, (), ()))
        self.api = NodeApi(
            self.chain,
            self.index,
            wake_miner=self._wake.set,
            client_version=CLIENT_VERSION,
            gas_cap=self._gas_cap,
        )
        restored = 0
        if created:
            if datadir is not None:
                datadir.write_genesis(genesis)
            self.tokens = deploy_default_stablecoins(self.chain)
            self.channel_manager = deploy_channel_manager(
                self.chain, grace_period=self._grace_period
            )
        else:
            assert datadir is not None
            restored = self._replay(datadir)
            self.tokens = find_stablecoins(self.chain, DEV_TOKEN_ADDRESSES)
            if self.chain.get_code(DEV_CHANNEL_MANAGER_ADDRESS):
                self.channel_manager = ChannelManager.at(self.chain, DEV_CHANNEL_MANAGER_ADDRESS)
        self.start = NodeStart(created, restored, time.perf_counter() - started)
        self._miner = threading.Thread(target=self._mine_forever, name="agent-pay-miner")
        self._miner.daemon = True
        self._miner.start()

    def _replay(self, datadir: DataDir) -> int:
        self._replaying = True
        count = 0
        try:
            for record in datadir.read_blocks():
                mined = self.chain.replay_block(record.timestamp, record.transactions)
                if (mined.number, mined.hash) != (record.number, record.hash):
                    raise DataDirError(
                        f"block {record.number} replays to another hash: the data directory "
                        f"was written by an incompatible version, or edited"
                    )
                count += 1
        except ChainError as exc:
            raise DataDirError(f"the recorded chain does not replay: {exc}") from exc
        finally:
            self._replaying = False
        return count

    # -- mining --------------------------------------------------------------------------------

    def _on_block(self, mined: MinedBlock) -> None:
        if self._datadir is not None and not self._replaying:
            self._datadir.append(
                BlockRecord(
                    mined.number, mined.timestamp, mined.hash, tuple(mined.raw_transactions())
                )
            )
        self.index.add(mined)
        self.api.block_mined()

    def _mine_forever(self) -> None:
        while not self._stopping.is_set():
            if not self._wake.wait(timeout=0.5):
                continue
            self._wake.clear()
            time.sleep(self._batch_window)  # let concurrent submissions join this block
            try:
                self.chain.mine()
            except ChainError:
                log.exception("a block could not be built; its transactions were dropped")
            except BaseException as exc:  # persistence failed: stop taking transactions
                log.critical("the node cannot record blocks any more: %r", exc)
                self.api.failure = exc
                return
            finally:
                self.api.prune_sent()
            if self.api.has_pending():
                self._wake.set()  # more than one block's worth arrived: go again at once

    # -- serving -------------------------------------------------------------------------------

    @contextmanager
    def serve(
        self, host: str = "127.0.0.1", port: int = 8545, limits: ServerLimits | None = None
    ) -> Iterator[str]:
        """Serve JSON-RPC with uvicorn in a background thread; yield the URL."""
        with serve_app(create_rpc_app(self.api, limits), host, port, limits) as url:
            yield url

    def close(self) -> None:
        """Stop mining, finish the block in hand, release the data directory."""
        self._stopping.set()
        self._wake.set()
        if self._miner is not None:
            self._miner.join(timeout=30)
            self._miner = None
            if self.api.failure is None:
                self.chain.mine()  # what was accepted is mined and recorded, not lost
        if self._datadir is not None:
            self._datadir.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
