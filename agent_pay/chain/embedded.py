"""An in-process EVM chain on py-evm: deterministic, offline, fast enough for load tests.

Transactions are accepted into a pending pool and mined in groups: whoever first waits for a
receipt mines every transaction pending at that moment into one block ("group commit"). Under
concurrency this batches many settlements into one block, which py-evm builds about three times
faster than one block per transaction, while a lone caller still sees its receipt at once.
Callers that are about to submit say so (`expecting()`): the miner then holds the block open
for them, up to `group_size` transactions and `group_wait` seconds, so that settlements
prepared while the previous block was being built share the next one instead of each starting
a block of their own. With nobody expected, it mines at once.

Block timestamps follow the given clock (wall time by default) and may repeat: a local chain
mining hundreds of blocks a second must not run ahead of real time, or EIP-3009 validity windows
(checked against `block.timestamp`) would expire early. That is the one rule relaxed from mainnet
(`agent_pay.chain.dev_genesis`).

Two hooks serve tools built on top (the JSON-RPC node in `agent_pay.node`): `on_block` reports
every mined block, and `replay_block` re-mines a recorded block at its recorded timestamp, so a
history written down block by block can be restored exactly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from eth.abc import SignedTransactionAPI
from eth_utils import ValidationError as EVMValidationError
from eth_utils import keccak, to_canonical_address, to_checksum_address

from agent_pay.chain import dev_genesis
from agent_pay.chain.base import (
    ChainError,
    Log,
    Receipt,
    TransactionRejectedError,
)
from agent_pay.chain.blocks import (
    MinedBlock,
    block_receipts,
    calldata_floor,
    fitting,
    revert_error,
)
from agent_pay.chain.dev_genesis import DEV_FUNDS, GAS_LIMIT
from agent_pay.chain.devkeys import dev_accounts
from agent_pay.chain.log_index import LogIndex
from agent_pay.chain.state_reads import StorageReader, spoofed

__all__ = ["DEFAULT_CHAIN_ID", "GROUP_SIZE", "GROUP_WAIT", "EmbeddedChain", "MinedBlock"]

DEFAULT_CHAIN_ID = 31337  # anvil's and hardhat's: wallets and x402 clients know it as a dev chain
_PRIORITY_FEE = 10**9  # 1 gwei
GROUP_SIZE = 256
"""Default for `EmbeddedChain(group_size=...)`: the most transactions a block waits for."""
GROUP_WAIT = 0.02
"""Default for `EmbeddedChain(group_wait=...)`: the longest a block waits (seconds) for
transactions announced by `expecting()`."""


class EmbeddedChain:
    """A py-evm chain living in this process. Thread-safe; implements `agent_pay.chain.Chain`.

    Args:
        chain_id: EIP-155 chain id (31337 by default, as anvil).
        funded: addresses given `funds` wei of native currency at genesis; by default the ten
            throwaway dev accounts of the public test mnemonic.
        clock: source of block timestamps (seconds); pass a fake clock for deterministic tests.
        genesis_timestamp: the genesis block's timestamp; the clock's reading by default. Pass
            the recorded one to rebuild a chain identical to an earlier run.
        on_block: called with every mined block, in order, while the next block waits (keep it
            short). It runs after the block's state and receipts are visible; if it raises, the
            block stays mined and the exception reaches whoever triggered the mining.
        group_size, group_wait: group commit (see the module docstring): a block mined for a
            receipt waits for transactions announced by `expecting()` until it holds
            `group_size`, or `group_wait` seconds passed since it started waiting, or nobody
            is expected any more. `mine()` never waits.
    """

    def __init__(
        self,
        *,
        chain_id: int = DEFAULT_CHAIN_ID,
        funded: Iterable[str] | None = None,
        funds: int = DEV_FUNDS,
        clock: Callable[[], float] = time.time,
        genesis_timestamp: int | None = None,
        on_block: Callable[[MinedBlock], None] | None = None,
        group_size: int = GROUP_SIZE,
        group_wait: float = GROUP_WAIT,
    ) -> None:
        self._chain_id = chain_id
        self.group_size = group_size
        self.group_wait = group_wait
        self._clock = clock
        self._on_block = on_block
        if funded is None:
            funded = [a.address for a in dev_accounts()]
        timestamp = int(clock()) if genesis_timestamp is None else genesis_timestamp
        self._chain = dev_genesis.dev_mining_chain(chain_id, funded, funds, timestamp)
        # Mining takes `_mine_lock`; nothing else does. Reads run against `_head`, an immutable
        # header whose state trie is never modified (py-evm writes new, content-addressed nodes),
        # so they need no lock and proceed while a block is being built.
        self._mine_lock = threading.Lock()
        self._pool_lock = threading.Lock()  # guards the pending pool; held only briefly
        # Notified when a transaction comes, or an expectation goes.
        self._pool_changed = threading.Condition(self._pool_lock)
        self._expected = 0  # callers inside `expecting()`: transactions on their way
        self._builder = self._chain.get_vm(self._chain.header).get_transaction_builder()
        self._pending: list[SignedTransactionAPI] = []
        self._pending_hashes: set[bytes] = set()
        self._next_nonce: dict[bytes, int] = {}
        self._receipts: dict[bytes, Receipt] = {}
        self._logs = LogIndex()
        self._dropped: dict[bytes, str] = {}
        self._head = self._chain.get_canonical_head()
        self._storage = StorageReader()

    # -- reads ---------------------------------------------------------------------------------

    @property
    def chain_id(self) -> int:
        return self._chain_id

    def block_number(self) -> int:
        return int(self._head.block_number)

    def latest_timestamp(self) -> int:
        return int(self._head.timestamp)

    def next_timestamp(self) -> int:
        return max(int(self._head.timestamp), int(self._clock()))

    def _state(self) -> Any:
        """A fresh read-only view of the latest block's state."""
        return self._chain.get_vm(self._head).state

    def get_balance(self, address: str) -> int:
        return int(self._state().get_balance(to_canonical_address(address)))

    def get_nonce(self, address: str) -> int:
        sender = to_canonical_address(address)
        with self._pool_lock:
            if sender in self._next_nonce:
                return self._next_nonce[sender]
        return int(self._state().get_nonce(sender))

    def get_code(self, address: str) -> bytes:
        return bytes(self._state().get_code(to_canonical_address(address)))

    def get_storage_at(self, address: str, slot: int) -> int:
        # Under the head's state root, whose trie nodes are never changed (as for `_state`).
        return self._storage.read(self._chain.chaindb.db, self._head.state_root, address, slot)

    def call(self, to: str, data: bytes, sender: str | None = None) -> bytes:
        head = self._head
        vm = self._chain.get_vm(head)
        tx = spoofed(vm, to, data, sender, value=0, gas=GAS_LIMIT)
        with vm.in_costless_state() as state:
            computation = state.costless_execute_transaction(tx)
        if computation.is_error:
            raise revert_error(computation.error)
        return bytes(computation.output)

    def estimate_gas(
        self, to: str | None, data: bytes, sender: str, value: int = 0, *, gas: int = GAS_LIMIT
    ) -> int:
        """The gas the call takes, searched up to ``gas`` (the block gas limit by default)."""
        head = self._head
        tx = spoofed(self._chain.get_vm(head), to, data, sender, value=value, gas=gas)
        try:
            return int(self._chain.estimate_gas(tx, head))
        except EVMValidationError as exc:
            raise TransactionRejectedError(str(exc)) from exc
        except Exception as exc:  # py-evm raises the VM error (Revert, ...) directly
            raise revert_error(exc) from exc

    def fee_params(self) -> tuple[int, int]:
        base_fee = int(self._chain.header.base_fee_per_gas)
        return 2 * base_fee + _PRIORITY_FEE, _PRIORITY_FEE

    @property
    def evm(self) -> Any:
        """The py-evm chain underneath, for tools that need more than `Chain` (the JSON-RPC node
        reads blocks and historical state through it). Never mine or import through it."""
        return self._chain

    @property
    def head(self) -> Any:
        """The header (py-evm) of the latest mined block: what every read sees."""
        return self._head

    def get_receipt(self, tx_hash: bytes) -> Receipt | None:
        return self._receipts.get(tx_hash)

    def get_logs(
        self,
        address: str,
        topics: Sequence[bytes | None] = (),
        from_block: int = 0,
        to_block: int | None = None,
    ) -> list[Log]:
        last = self.block_number() if to_block is None else to_block
        return self._logs.find(address, topics, from_block, last)

    def is_pending(self, tx_hash: bytes) -> bool:
        """True while a transaction is accepted and neither mined nor dropped yet."""
        with self._pool_lock:
            return tx_hash in self._pending_hashes

    # -- writes --------------------------------------------------------------------------------

    def send_raw_transaction(self, raw: bytes) -> bytes:
        try:
            tx = self._builder.decode(raw)
            tx.validate()
            sender = tx.sender
        except Exception as exc:
            raise TransactionRejectedError(f"invalid transaction: {exc}") from exc
        if tx.chain_id is not None and tx.chain_id != self._chain_id:
            raise TransactionRejectedError(
                f"wrong chain id {tx.chain_id}, expected {self._chain_id}"
            )
        if tx.gas > GAS_LIMIT:
            raise TransactionRejectedError("gas limit exceeds the block gas limit")
        if tx.gas < calldata_floor(tx.data):
            # EIP-7623 (Prague): py-evm does not enforce the calldata floor; real nodes do.
            raise TransactionRejectedError(
                f"gas limit {tx.gas} is below the calldata floor {calldata_floor(tx.data)}"
            )
        expected = self.get_nonce(to_checksum_address(sender))
        with self._pool_lock:
            expected = self._next_nonce.get(sender, expected)
            if tx.hash in self._pending_hashes or tx.hash in self._receipts:
                return bytes(tx.hash)  # idempotent resubmission, as real nodes answer
            if tx.nonce != expected:
                raise TransactionRejectedError(f"nonce {tx.nonce} is not the next nonce {expected}")
            self._next_nonce[sender] = expected + 1
            self._pending.append(tx)
            self._pending_hashes.add(tx.hash)
            self._pool_changed.notify_all()
        return bytes(tx.hash)

    @contextmanager
    def expecting(self) -> Iterator[None]:
        """Announce a transaction on its way (a settlement being checked and signed): a block
        being mined for a receipt meanwhile waits for it, within `group_wait`. Leave the block
        before waiting for a receipt of your own."""
        with self._pool_lock:
            self._expected += 1
        try:
            yield
        finally:
            with self._pool_lock:
                self._expected -= 1
                self._pool_changed.notify_all()

    def wait_for_receipt(self, tx_hash: bytes, timeout: float = 30.0) -> Receipt:
        receipt = self._receipts.get(tx_hash)
        # Group commit: mine ours and everything queued beside it. A block holds at most its gas
        # limit, so a very long queue takes several blocks: keep mining while ours waits.
        while receipt is None and tx_hash in self._pending_hashes:
            self._mine_group(tx_hash)
            receipt = self._receipts.get(tx_hash)
        if receipt is not None:
            return receipt
        if tx_hash in self._dropped:
            raise TransactionRejectedError(self._dropped[tx_hash])
        raise ChainError(f"unknown transaction 0x{tx_hash.hex()}")

    def _mine_group(self, tx_hash: bytes) -> None:
        """Mine a block holding `tx_hash`, first letting announced transactions join it."""
        with self._mine_lock:
            with self._pool_lock:
                if tx_hash not in self._pending_hashes:
                    return  # mined by whoever held the lock before us
                deadline = time.monotonic() + self.group_wait
                while self._expected and len(self._pending) < self.group_size:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._pool_changed.wait(left):
                        break
            self._mine_locked(allow_empty=False)

    def mine(self, *, allow_empty: bool = False) -> int:
        """Mine pending transactions, oldest first and as many as the block's gas limit holds,
        into one block; return how many were included. The rest stay pending."""
        with self._mine_lock:
            return self._mine_locked(allow_empty=allow_empty)

    def _mine_locked(self, *, allow_empty: bool) -> int:
        with self._pool_lock:
            batch = fitting(self._pending, GAS_LIMIT)
            self._pending = self._pending[len(batch) :]
        if not batch and not allow_empty:
            return 0
        mined = batch
        try:
            block = self._mine_batch(batch)
        except EVMValidationError:
            # One transaction became invalid after it was accepted (its sender ran out of
            # gas money, say). Find the culprits, drop them, mine the rest.
            mined = self._drop_invalid(batch)
            block = self._mine_batch(mined)
        except Exception as exc:
            # Never lose a batch silently: every waiter learns its transaction failed.
            for tx in batch:
                self._dropped[tx.hash] = f"block could not be built: {exc!r}"
            with self._pool_lock:
                self._next_nonce.clear()
            raise ChainError(f"block could not be built: {exc!r}") from exc
        finally:
            with self._pool_lock:
                self._pending_hashes.difference_update(tx.hash for tx in batch)
        if self._on_block is not None:
            self._on_block(block)
        return len(mined)

    def replay_block(self, timestamp: int, raw_transactions: Sequence[bytes]) -> MinedBlock:
        """Mine exactly `raw_transactions`, in order, into one block stamped `timestamp`.

        For restoring a recorded history (the node's data directory): the same transactions
        at the same timestamps on the same genesis give the same blocks, hash for hash. Every
        transaction must be valid here; otherwise ChainError and nothing is mined. Only call it
        while nothing is pending.
        """
        try:
            batch = [self._builder.decode(raw) for raw in raw_transactions]
        except Exception as exc:
            raise ChainError(f"cannot decode a recorded transaction: {exc}") from exc
        with self._mine_lock:
            with self._pool_lock:
                if self._pending:
                    raise ChainError("cannot replay a block while transactions are pending")
            if timestamp < int(self._head.timestamp):
                raise ChainError(f"timestamp {timestamp} is before the head's")
            try:
                block = self._mine_batch(batch, timestamp=timestamp)
            except Exception as exc:
                raise ChainError(f"recorded block does not replay: {exc!r}") from exc
            with self._pool_lock:
                self._next_nonce.clear()
            if self._on_block is not None:
                self._on_block(block)
            return block

    # -- internals -----------------------------------------------------------------------------

    def _mine_batch(
        self, batch: list[SignedTransactionAPI], *, timestamp: int | None = None
    ) -> MinedBlock:
        if timestamp is None:
            timestamp = max(int(self._head.timestamp), int(self._clock()))
        self._chain.header = self._chain.header.copy(timestamp=timestamp)
        result, receipts, computations = self._chain.mine_all(
            batch, mix_hash=keccak(self._head.hash)
        )
        block = result.imported_block
        header = block.header
        ours = block_receipts(header, batch, receipts, computations)
        for receipt in ours:
            self._receipts[receipt.tx_hash] = receipt
            self._logs.add(receipt.logs)
        self._head = header
        return MinedBlock(block, tuple(receipts), tuple(ours))

    def _drop_invalid(self, batch: list[SignedTransactionAPI]) -> list[SignedTransactionAPI]:
        vm = self._chain.get_vm(self._chain.header)
        keep: list[SignedTransactionAPI] = []
        header = vm.get_header()
        for tx in batch:
            try:
                # py-evm validates before it writes any state: a refused tx leaves none behind.
                receipt, _ = vm.apply_transaction(header, tx)
            except EVMValidationError as exc:
                self._dropped[tx.hash] = f"transaction dropped: {exc}"
                with self._pool_lock:  # the sender's later nonces now have a gap: start over
                    self._next_nonce.pop(tx.sender, None)
                continue
            header = vm.add_receipt_to_header(header, receipt)
            keep.append(tx)
        return keep
