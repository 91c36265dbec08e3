"""Receipts, offline: read one from wherever it was found, check it, list what an agent bought.

A receipt is the server's EIP-712 signature over what was paid (`agent_pay.signing.receipt`).
Checking it needs no network: recover the signer from the signature and compare it with the
address the server publishes at `GET /.well-known/agent-pay` (`receiptSigner`)::

    receipt = load_receipt(text)          # JSON, a PAYMENT-RESPONSE or AGENT-PAY-RECEIPT value
    verify_receipt(receipt, "0x5aAe...")  # raises ReceiptError unless that key signed it

A receipt proves the server said it was paid; whether the transfer is on chain is a question
for the chain (`transaction` names it).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from agent_pay.client.receipts import ReceiptStore, StoredPurchase, StoredReceipt
from agent_pay.errors import AgentPayError, Reason
from agent_pay.protocol import normalize_address
from agent_pay.protocol.extensions import SignedReceipt, receipt_info

__all__ = ["ReceiptError", "list_purchases", "list_receipts", "load_receipt", "verify_receipt"]


class ReceiptError(AgentPayError):
    """A receipt cannot be read, or does not verify."""

    status_code = 400
    default_reason = Reason.RECEIPT_INVALID


def load_receipt(source: str | bytes | Mapping[str, Any] | SignedReceipt) -> SignedReceipt:
    """A `SignedReceipt` from any of the forms it travels in: the object, its JSON, a stored
    receipt line ({"url", "receipt"}), a `PAYMENT-RESPONSE` body or header value (the receipt
    is its `extensions["agent-pay/receipt"]`), or an `AGENT-PAY-RECEIPT` header value.

    Raises:
        ReceiptError: if none of these fits.
    """
    if isinstance(source, SignedReceipt):
        return source
    data: Any = source
    if isinstance(source, bytes | str):
        data = _parse(source.decode("utf-8", "replace") if isinstance(source, bytes) else source)
    if isinstance(data, Mapping):
        for nested in (
            data.get("receipt"),
            receipt_info(data.get("extensions")),
        ):
            if isinstance(nested, Mapping):
                data = nested
                break
    try:
        return SignedReceipt.from_wire(dict(data) if isinstance(data, Mapping) else data)
    except ValidationError as exc:
        detail = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in detail["loc"]) or "(root)"
        raise ReceiptError(f"not a receipt: {where}: {detail['msg']}") from None


def verify_receipt(
    receipt: str | bytes | Mapping[str, Any] | SignedReceipt, expected_signer: str
) -> SignedReceipt:
    """Check offline that the key of `expected_signer` (the server's published receipt
    address) signed `receipt`; return it.

    Raises:
        ReceiptError: unreadable, or signed by another key (or altered after signing).
    """
    from agent_pay.signing.receipt import recover_receipt_signer  # eth-account: only to verify

    signed = load_receipt(receipt)
    try:
        expected = normalize_address(expected_signer)
    except ValueError as exc:
        raise ReceiptError(f"expected signer: {exc}", Reason.CONFIGURATION) from None
    try:
        signer = recover_receipt_signer(signed)
    except ValueError as exc:
        raise ReceiptError(f"bad signature: {exc}") from None
    if signer != expected:
        raise ReceiptError(
            f"not signed by {expected} (the signature recovers {signer}: another key, or the "
            "receipt was altered)"
        )
    if signed.signer != signer:
        raise ReceiptError(f"the receipt names {signed.signer} as signer, but {signer} signed it")
    return signed


def list_receipts(
    directory: str | os.PathLike[str], payer: str | None = None
) -> list[StoredReceipt]:
    """The receipts an agent kept in `directory` (its `ReceiptStore`), oldest first."""
    store = ReceiptStore.open(directory)
    try:
        return store.receipts(normalize_address(payer) if payer else None)
    finally:
        store.close()


def list_purchases(
    directory: str | os.PathLike[str], payer: str | None = None
) -> list[StoredPurchase]:
    """The articles an agent in `directory` bought without a receipt (by channel voucher: the
    server signs none per voucher read; re-reading the article returns one), oldest first."""
    store = ReceiptStore.open(directory)
    try:
        return store.purchases(normalize_address(payer) if payer else None)
    finally:
        store.close()


def _parse(text: str) -> Any:
    text = text.strip()
    if not text.startswith("{"):
        try:
            text = base64.b64decode(text, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise ReceiptError("neither JSON nor base64 JSON") from None
    try:
        return json.loads(text)
    except ValueError:
        raise ReceiptError("not valid JSON") from None
