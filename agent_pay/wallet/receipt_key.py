"""The content server's receipt-signing key, kept on disk so receipts outlive a restart."""

from __future__ import annotations

import os
import secrets

from agent_pay.settings import Settings
from agent_pay.signing import LocalSigner

__all__ = ["RECEIPT_KEY_FILE", "server_receipt_key"]

RECEIPT_KEY_FILE = "receipt.key"


def server_receipt_key(settings: Settings) -> LocalSigner:
    """The key a content server signs receipts with: `receipt_key` if set, else the one kept in
    `server_dir` (made on first start, readable by its owner only), so receipts issued before
    a restart still verify against the same published address."""
    if settings.receipt_key is not None:
        return LocalSigner.from_key(settings.receipt_key.get_secret_value())
    path = settings.server_dir / RECEIPT_KEY_FILE
    if path.is_file():
        return LocalSigner.from_key(path.read_text(encoding="ascii").strip())
    key = "0x" + secrets.token_hex(32)  # written from here: never taken back out of a signer
    signer = LocalSigner.from_key(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as out:
        out.write(key + "\n")
    return signer
