"""The messages between `ProcessChain` and the process hosting its chain (`process_host`).

One message is one pickle of plain values only — tuples, lists, bytes, str, int, bool, None —
so it is compact and quick to write and read, and a reader refuses anything else: an unpickler
that cannot look up a single class or function cannot be made to run code, so garbage on the
pipe is an error, never an action.

A request is `(id, method, args)`; id 0 asks for no answer. An answer is `(id, True, value,
head)` or `(id, False, (kind, message, data), head)`, `kind` one of `ERRORS`' names and `head`
what the chain's head was when it was written: (timestamp, max fee per gas, priority fee).
Receipts and logs travel as tuples (`receipt_to_wire`, `receipt_from_wire`).
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from agent_pay.chain.base import (
    ChainError,
    ContractRevertError,
    Log,
    Receipt,
    TransactionRejectedError,
)

__all__ = [
    "ERRORS",
    "WireError",
    "dumps",
    "error_from_wire",
    "error_to_wire",
    "loads",
    "receipt_from_wire",
    "receipt_to_wire",
]

_PROTOCOL = pickle.HIGHEST_PROTOCOL


class WireError(ValueError):
    """A message that is not one of ours (not a pickle of plain values, or the wrong shape)."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise WireError(f"refused: a message may not name {module}.{name}")


def dumps(message: object) -> bytes:
    return pickle.dumps(message, protocol=_PROTOCOL)


def loads(data: bytes) -> Any:
    """Read one message; WireError for anything but a pickle of plain values."""
    try:
        return _PlainUnpickler(io.BytesIO(data)).load()
    except WireError:
        raise
    except Exception as exc:  # a truncated or corrupt pickle raises many kinds
        raise WireError(f"unreadable message: {type(exc).__name__}") from exc


def receipt_to_wire(receipt: Receipt | None) -> tuple[Any, ...] | None:
    if receipt is None:
        return None
    logs = tuple(
        (log.address, log.topics, log.data, log.log_index, log.transaction_hash, log.block_number)
        for log in receipt.logs
    )
    return (
        receipt.tx_hash,
        receipt.block_number,
        receipt.block_timestamp,
        receipt.status,
        receipt.gas_used,
        receipt.sender,
        receipt.to,
        receipt.contract_address,
        logs,
        receipt.revert_reason,
    )


def receipt_from_wire(value: Any) -> Receipt | None:
    if value is None:
        return None
    tx_hash, number, timestamp, status, gas_used, sender, to, created, logs, reason = value
    return Receipt(
        tx_hash=tx_hash,
        block_number=number,
        block_timestamp=timestamp,
        status=status,
        gas_used=gas_used,
        sender=sender,
        to=to,
        contract_address=created,
        logs=tuple(Log(*entry) for entry in logs),
        revert_reason=reason,
    )


ERRORS: dict[str, type[Exception]] = {
    "rejected": TransactionRejectedError,
    "revert": ContractRevertError,
    "timeout": TimeoutError,
    "value": ValueError,
    "chain": ChainError,
}
"""The errors a hosted chain's answer can carry, by the name they travel under; anything else
the chain raises arrives as a ChainError with its type's name in the message."""


def error_to_wire(exc: BaseException) -> tuple[str, str, bytes | str | None]:
    if isinstance(exc, ContractRevertError):
        return ("revert", exc.reason or "", exc.data)
    for kind, cls in ERRORS.items():
        if isinstance(exc, cls):
            return (kind, str(exc), None)
    return ("chain", f"{type(exc).__name__}: {exc}", None)


def error_from_wire(value: Any) -> Exception:
    kind, message, data = value
    if kind == "revert":
        return ContractRevertError(message or None, data or b"")
    return ERRORS.get(kind, ChainError)(message)
