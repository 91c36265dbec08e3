"""What entitles an agent to read a bought article again: the server-signed receipts it checks
before keeping them, and the key proof it answers an entitlement challenge with.

Pure functions over wire types and a `Signer`; `PaymentAuth` keeps what they accept in its
`ReceiptStore`.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from agent_pay.errors import MalformedPaymentError
from agent_pay.protocol import PaymentRequired, PaymentRequirements, SettleResponse
from agent_pay.protocol.codec import PAYMENT_REQUIRED_HEADER, decode_header, encode_header
from agent_pay.protocol.extensions import (
    NO_TRANSACTION,
    RECEIPT_HEADER,
    EntitlementChallenge,
    EntitlementProof,
    SignedReceipt,
    challenge_info,
    receipt_info,
)
from agent_pay.signing import Signer
from agent_pay.signing.receipt import recover_receipt_signer, sign_read_proof

__all__ = [
    "entitlement_challenge",
    "entitlement_proof",
    "error_reason",
    "paid_receipt",
    "reread_receipt",
]

log = logging.getLogger(__name__)


def entitlement_challenge(required: PaymentRequired) -> EntitlementChallenge | None:
    """The agent-pay entitlement challenge a 402 carries, if any (and readable)."""
    raw = challenge_info(required.extensions)
    if raw is None:
        return None
    try:
        return EntitlementChallenge.from_wire(raw)
    except ValidationError:
        return None  # a server we cannot re-read from: pay as usual


def entitlement_proof(
    signer: Signer,
    url: httpx.URL,
    challenge: EntitlementChallenge,
    receipt: SignedReceipt | None,
) -> str:
    """The `AGENT-PAY-ENTITLEMENT` header answering `challenge` for `url`: `signer`'s key
    proof, with the `receipt` it holds for `url` if any."""
    path = url.path
    nonce = bytes.fromhex(challenge.challenge[2:])
    signature = sign_read_proof(signer, path, nonce, challenge.expires_at, challenge.signer)
    proof = EntitlementProof(
        payer=signer.address,
        resource=path,
        challenge=challenge.challenge,
        expires_at=challenge.expires_at,
        signature="0x" + signature.hex(),
        receipt=receipt,
    )
    return encode_header(proof)


def paid_receipt(
    url: httpx.URL, payer: str, offer: PaymentRequirements, settlement: SettleResponse
) -> SignedReceipt | None:
    """The receipt in `settlement` if it checks out (signed by the key it names, for `payer`,
    `url`, `offer`'s terms and the settlement's transaction); None if absent or wrong."""
    raw = receipt_info(settlement.extensions)
    if raw is None:
        return None
    try:
        receipt = SignedReceipt.from_wire(raw)
        signer = recover_receipt_signer(receipt)
    except (ValidationError, ValueError):
        log.warning("ignoring an unreadable receipt from %s", url)
        return None
    expected = (
        payer,
        settlement.transaction or NO_TRANSACTION,  # a voucher read settles none
        offer.amount,
        offer.asset,
        offer.pay_to,
        url.path,
    )
    found = (
        receipt.payer,
        receipt.transaction,
        receipt.amount,
        receipt.asset,
        receipt.pay_to,
        urlsplit(receipt.resource).path,
    )
    if signer != receipt.signer or found != expected:
        log.warning("ignoring a receipt from %s that does not match the payment", url)
        return None
    return receipt


def reread_receipt(url: httpx.URL, payer: str, response: httpx.Response) -> SignedReceipt | None:
    """The receipt a re-read answered with (`AGENT-PAY-RECEIPT`) if it is for `payer`'s read
    of `url` and signed by the key it names; None otherwise."""
    raw = response.headers.get(RECEIPT_HEADER)
    if raw is None:
        return None
    try:
        receipt = decode_header(raw, SignedReceipt)
        signer = recover_receipt_signer(receipt)
    except (MalformedPaymentError, ValueError):
        log.warning("ignoring an unreadable receipt from %s", url)
        return None
    found = (signer, receipt.payer, urlsplit(receipt.resource).path)
    if found != (receipt.signer, payer, url.path):
        log.warning("ignoring a receipt from %s that is not for this read", url)
        return None
    return receipt


def error_reason(response: httpx.Response) -> str | None:
    """The reason code of a refused payment's 402, if it carries one."""
    header = response.headers.get(PAYMENT_REQUIRED_HEADER)
    if header is None:
        return None
    try:
        return decode_header(header, PaymentRequired).error
    except MalformedPaymentError:
        return None
