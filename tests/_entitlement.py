"""Re-read proofs for the entitlement tests: the 402's challenge, and a proof header over it."""

from __future__ import annotations

import httpx

from agent_pay.protocol import PaymentRequired
from agent_pay.protocol.codec import PAYMENT_REQUIRED_HEADER, decode_header, encode_header
from agent_pay.protocol.extensions import (
    ENTITLEMENT_EXTENSION,
    EntitlementChallenge,
    EntitlementProof,
    SignedReceipt,
)
from agent_pay.signing import Signer
from agent_pay.signing.receipt import sign_read_proof


def challenge_for(http: httpx.Client, slug: str) -> EntitlementChallenge:
    """The entitlement challenge in the 402 for `slug`."""
    response = http.get(f"/articles/{slug}")
    assert response.status_code == 402
    required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
    assert required.extensions is not None
    entry = required.extensions[ENTITLEMENT_EXTENSION]
    assert set(entry) == {"info", "schema"}  # x402's extension shape
    return EntitlementChallenge.from_wire(entry["info"])


def proof_header(
    signer: Signer,
    challenge: EntitlementChallenge,
    resource: str,
    *,
    payer: str | None = None,
    server: str | None = None,
    receipt: SignedReceipt | None = None,
) -> str:
    """An `AGENT-PAY-ENTITLEMENT` header answering `challenge` for `resource`, signed by
    `signer`, claiming to be `payer` (`signer` by default) at `server` (the challenge's)."""
    nonce = bytes.fromhex(challenge.challenge[2:])
    signature = sign_read_proof(
        signer, resource, nonce, challenge.expires_at, server or challenge.signer
    )
    proof = EntitlementProof(
        payer=payer or signer.address,
        resource=resource,
        challenge=challenge.challenge,
        expires_at=challenge.expires_at,
        signature="0x" + signature.hex(),
        receipt=receipt,
    )
    return encode_header(proof)
