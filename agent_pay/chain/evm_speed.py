"""py-evm's Prague VM with less per-message and per-transaction overhead, and the same results.

Every change here removes work whose outcome is already known; none changes gas, state, logs
or receipts (tests/test_evm_speed.py mines the same transactions with and without them):

- JUMPDEST analysis once per code, not once per message. py-evm re-derives, for every message
  (each transaction, each internal call, each `eth_call`), which code offsets begin an
  instruction rather than sit inside PUSH data. That is a function of the code bytes alone, so
  it is computed once per distinct code and shared.
- `extend_memory` returns at once when the range already lies inside memory: then the
  expansion gas is zero and memory does not grow, which py-evm works out the long way (argument
  validation, two quadratic cost evaluations) on every MLOAD and MSTORE.
- `memory_write` recognises the common case (a `bytes` value of the stated size, inside
  memory) with plain comparisons and writes it directly; anything else takes py-evm's path.
- Gas is charged straight on the gas meter (one Python call per opcode fewer).
- The state's logger is looked up once, not by name several times per transaction.
- Per transaction, the receipt's bloom filter is not re-checked against the logs it was built
  from a line earlier, and a transaction without blobs does not copy the header to add zero
  blob gas to it.

Only classes configured into our own chain are changed; py-evm itself is not patched.
"""

from __future__ import annotations

import threading
from typing import Any

from eth.abc import BlockHeaderAPI, SignedTransactionAPI
from eth.vm.code_stream import CodeStream
from eth.vm.forks.byzantium import EIP658_STATUS_CODES
from eth.vm.forks.cancun.state import get_total_blob_gas
from eth.vm.forks.prague import PragueVM
from eth.vm.forks.prague.computation import PragueComputation
from eth.vm.forks.prague.state import PragueState
from eth.vm.memory import Memory
from eth_utils import ValidationError, encode_hex, get_extended_debug_logger

__all__ = [
    "AnalysedCodeStream",
    "FastPragueComputation",
    "FastPragueState",
    "FastPragueVM",
    "instruction_starts",
]

_PUSH1 = 0x60
_PUSH32 = 0x7F
_MAX_CACHED_CODES = 512  # distinct codes remembered; a dev chain runs a handful of contracts

_starts_cache: dict[bytes, frozenset[int]] = {}
_starts_lock = threading.Lock()


def instruction_starts(code: bytes) -> frozenset[int]:
    """The offsets in `code` where an instruction begins: every offset that is not PUSH data.

    A JUMP may only land on a JUMPDEST byte at one of these offsets. Memoised per code (code is
    immutable, and the answer depends on nothing else).
    """
    starts = _starts_cache.get(code)
    if starts is None:
        starts = frozenset(_scan(code))
        with _starts_lock:
            if len(_starts_cache) >= _MAX_CACHED_CODES:
                _starts_cache.clear()
            _starts_cache[code] = starts
    return starts


def _scan(code: bytes) -> list[int]:
    starts = []
    position, length = 0, len(code)
    while position < length:
        starts.append(position)
        opcode = code[position]
        position += 1
        if _PUSH1 <= opcode <= _PUSH32:
            position += opcode - _PUSH1 + 1
    return starts


class AnalysedCodeStream(CodeStream):  # type: ignore[misc]
    """py-evm's code stream, answering `is_valid_opcode` from the memoised analysis."""

    __slots__ = ("_starts",)

    def __init__(self, code_bytes: bytes) -> None:
        super().__init__(code_bytes)
        self._starts = instruction_starts(code_bytes)

    def is_valid_opcode(self, position: int) -> bool:
        return position in self._starts


class FastPragueComputation(PragueComputation):  # type: ignore[misc]
    """Prague message execution with the per-message and per-opcode savings above."""

    def __init__(self, state: Any, message: Any, transaction_context: Any) -> None:
        super().__init__(state, message, transaction_context)
        self.code = AnalysedCodeStream(message.code)
        # Opcodes call `computation.consume_gas(cost, mnemonic)`: go to the meter directly. The
        # meter is made once, in __init__, and never replaced.
        self.consume_gas = self._gas_meter.consume_gas

    def extend_memory(self, start_position: int, size: int) -> None:
        # Memory grows in whole 32-byte words, so a range ending inside it costs no gas and
        # extends nothing: py-evm would reach the same conclusion, only slower.
        if (
            type(start_position) is int
            and type(size) is int
            and start_position >= 0
            and size >= 0
            and start_position + size <= len(self._memory)
        ):
            return
        super().extend_memory(start_position, size)

    def memory_write(self, start_position: int, size: int, value: bytes) -> None:
        memory = self._memory
        if (
            type(memory) is Memory
            and type(value) is bytes
            and type(start_position) is int
            and start_position >= 0
            and len(value) == size
            and start_position + size <= len(memory._bytes)
        ):
            memory._bytes[start_position : start_position + size] = value
            return
        super().memory_write(start_position, size, value)


class FastPragueState(PragueState):  # type: ignore[misc]
    """Prague state executing through `FastPragueComputation`."""

    computation_class = FastPragueComputation
    # py-evm's `logger` is a property that looks the logger up by name on every use (several
    # times per transaction, logging or not); this is the same logger, looked up once.
    logger = get_extended_debug_logger("eth.vm.state.FastPragueState")


class FastPragueVM(PragueVM):  # type: ignore[misc]
    """Prague, executing through `FastPragueComputation`, with less per-transaction copying."""

    _state_class = FastPragueState

    def apply_transaction(self, header: BlockHeaderAPI, transaction: SignedTransactionAPI) -> Any:
        # py-evm's VM.apply_transaction, less `validate_receipt`'s bloom half: the bloom was
        # just computed from these very logs. The status-code half (Byzantium) stays.
        self.validate_transaction_against_header(header, transaction)
        self.state.lock_changes()
        computation = self.state.apply_transaction(transaction)
        receipt = self.make_receipt(header, transaction, computation, self.state)
        if receipt.state_root not in EIP658_STATUS_CODES:
            raise ValidationError(
                "The receipt's `state_root` must be a status code. "
                f"Got: {encode_hex(receipt.state_root)}"
            )
        return receipt, computation

    def increment_blob_gas_used(
        self, old_header: BlockHeaderAPI, transaction: SignedTransactionAPI
    ) -> BlockHeaderAPI:
        if get_total_blob_gas(transaction) == 0:
            return old_header  # what py-evm returns, less the copy
        return super().increment_blob_gas_used(old_header, transaction)
