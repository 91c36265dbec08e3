"""Receipts and re-reads on the server: sign what was paid for, let the payer read it again.

`ReceiptIssuer` signs a `Receipt` with the server's receipt key for every payment settled
through the ledger, and for every re-read of a read paid by channel voucher (whose own answer
carries none); the address of that key is published at `GET /.well-known/agent-pay`.

`Entitlements` issues the stateless challenges carried in every 402 and checks the proofs sent
back in `AGENT-PAY-ENTITLEMENT` or, from stock x402 clients, in `SIGN-IN-WITH-X`
(`agent_pay.server.siwx`). Either proof yields one thing, the payer's verified address
(`proven_payer`); what it may read is then looked up (`grant`). A challenge is an HMAC, under
a secret only this server holds, of (resource, expiry, receipt address): the server keeps
nothing per challenge, and a challenge made for one article or by another server does not
verify. A proof is the payer's
EIP-712 signature over (resource, challenge, expiry, server). What grants the read is the
server's own record of the purchase — a paid entry for (payer, resource) in its ledger, or in
an `EntitlementSource` (a scheme that records its own reads: a channel's voucher reads, kept by
the channel store) — and possession of the payer's key; a receipt alone, copied or not, grants
nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol, runtime_checkable
from urllib.parse import urlsplit

import anyio.to_thread

from agent_pay.errors import PaymentRejectedError, Reason
from agent_pay.protocol.extensions import (
    ENTITLEMENT_EXTENSION,
    ENTITLEMENT_HEADER,
    NO_TRANSACTION,
    RECEIPT_EXTENSION,
    RECEIPT_HEADER,
    EntitlementChallenge,
    EntitlementProof,
    ReceiptClaims,
    SignedReceipt,
)
from agent_pay.protocol.siwx import SiwxPayload
from agent_pay.server.ledger import Entry
from agent_pay.server.optional_header import OptionalHeader
from agent_pay.server.refusals import ledger_down
from agent_pay.server.siwx import SignInWithX
from agent_pay.signing import Signer
from agent_pay.signing.receipt import (
    PROOF_DOMAIN,
    RECEIPT_DOMAIN,
    recover_read_proof_signer,
    sign_receipt,
)
from agent_pay.store.errors import STORE_ERRORS
from agent_pay.store.protocols import PaymentLedger

__all__ = [
    "CHALLENGE_TTL_SECONDS",
    "EntitlementHeader",
    "EntitlementSource",
    "Entitlements",
    "Grant",
    "ReceiptIssuer",
    "discovery_document",
]

CHALLENGE_TTL_SECONDS: Final = 300
"""How long a challenge from a 402 may be answered."""


class ReceiptIssuer:
    """Signs receipts with the server's receipt key."""

    def __init__(self, signer: Signer, *, clock: Callable[[], float] = time.time) -> None:
        self.signer = signer
        self._clock = clock

    @property
    def address(self) -> str:
        return self.signer.address

    def issue(self, entry: Entry, transaction: str) -> SignedReceipt:
        """The receipt for `entry`, settled in `transaction` ("" when none was needed)."""
        claims = ReceiptClaims(
            scheme=entry.key.scheme,
            payer=entry.key.payer,
            pay_to=entry.pay_to,
            resource=entry.resource_url,
            amount=entry.amount,
            asset=entry.asset,
            network=entry.network,
            transaction=transaction or NO_TRANSACTION,
            issued_at=int(self._clock()),
        )
        return self.sign(claims)

    def sign(self, claims: ReceiptClaims) -> SignedReceipt:
        """`claims` signed (the same claims always give the same receipt)."""
        return sign_receipt(self.signer, claims)


@runtime_checkable
class EntitlementSource(Protocol):
    """Where paid reads that bypass the ledger are recorded (an `OfferBuilder` may be one)."""

    async def entitlement(self, payer: str, resource: str) -> ReceiptClaims | None:
        """What the receipt of `payer`'s purchase of `resource` (a URL path) states, if
        `payer` bought it here; None otherwise."""
        ...


@dataclass(frozen=True, slots=True)
class Grant:
    """A re-read granted: the receipt of the purchase that entitles it, when there is one."""

    receipt: SignedReceipt | None


class Entitlements:
    """Challenges for re-reads, and the check of a proof against the server's records.

    Args:
        ledger: where paid entries (the entitlements) are looked up first.
        issuer: the server's receipt key: proofs are bound to its address, and it signs the
            receipt of a purchase found in `sources`.
        sources: where else purchases are recorded (a channel's voucher reads), in order.
        siwx: checks `SIGN-IN-WITH-X` sign-ins; without it they are refused.
        secret: the HMAC key for challenges (random by default: challenges then die with the
            process, which only costs a client one more round trip).
        ttl: seconds a challenge stays valid.
    """

    def __init__(
        self,
        ledger: PaymentLedger,
        issuer: ReceiptIssuer,
        *,
        sources: Iterable[EntitlementSource] = (),
        secret: bytes | None = None,
        ttl: int = CHALLENGE_TTL_SECONDS,
        siwx: SignInWithX | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.issuer = issuer
        self.server = issuer.address
        self.sources = list(sources)
        self.siwx = siwx
        self._secret = secret or secrets.token_bytes(32)
        self.ttl = ttl
        self._clock = clock

    def challenge(self, resource: str) -> EntitlementChallenge:
        """A fresh challenge for `resource` (a URL path)."""
        expires_at = int(self._clock()) + self.ttl
        return EntitlementChallenge(
            challenge="0x" + self._mac(resource, expires_at).hex(),
            expires_at=expires_at,
            signer=self.server,
        )

    async def proven_payer(
        self,
        url: str,
        *,
        entitlement: EntitlementProof | None = None,
        siwx: SiwxPayload | None = None,
    ) -> str | None:
        """The payer a request for `url` proves to hold the key of, by either proof it carries:
        our `AGENT-PAY-ENTITLEMENT` (`entitlement`) or x402's `SIGN-IN-WITH-X` (`siwx`,
        decoded). None when it carries neither. Checks the proof only, not what the payer
        bought (`grant`). A sign-in is used up by the check: call this once per request.

        Raises:
            PaymentRejectedError: with `Reason.ENTITLEMENT_INVALID`, when a proof is present
                but refused (expired, foreign, for another resource, another key), or when
                both are present and name different payers.
        """
        payers: set[str] = set()
        if entitlement is not None:
            payers.add(self._entitlement_payer(entitlement, urlsplit(url).path))
        if siwx is not None:
            if self.siwx is None:
                raise _invalid("this server does not accept SIGN-IN-WITH-X")
            payers.add(await self.siwx.use(siwx, url))
        if len(payers) > 1:
            raise _invalid("the two proofs name different payers")
        return payers.pop() if payers else None

    async def check(self, proof: EntitlementProof, resource: str) -> Grant:
        """What entitles the prover of `proof` to `resource` (a URL path): `grant` for the
        payer the proof proves.

        Raises:
            PaymentRejectedError: with `Reason.ENTITLEMENT_INVALID`, saying why.
            ChainUnavailableError: the records cannot be read (503: retry).
        """
        return await self.grant(self._entitlement_payer(proof, resource), resource)

    async def grant(self, payer: str, resource: str) -> Grant:
        """What entitles `payer` (proven: `proven_payer`) to `resource` (a URL path): a paid
        ledger entry, or a purchase one of the `sources` recorded.

        Raises:
            PaymentRejectedError: with `Reason.ENTITLEMENT_INVALID` if `payer` never bought it.
            ChainUnavailableError: the records cannot be read (503: retry).
        """
        try:
            if self.ledger.shared:  # a round trip to the database: off the event loop
                entry = await anyio.to_thread.run_sync(self.ledger.entitlement, payer, resource)
            else:  # a local SQLite file, or memory: inline, as every read's fast path is
                entry = self.ledger.entitlement(payer, resource)
            if entry is not None:
                return Grant(entry.receipt)
            for source in self.sources:
                claims = await source.entitlement(payer, resource)
                if claims is not None:
                    return Grant(self.issuer.sign(claims))
        except STORE_ERRORS as exc:
            # Unknown is not "not bought": a refusal here would have the payer pay again.
            raise ledger_down(exc) from exc
        raise _invalid(f"{payer} has not bought {resource}")

    def _entitlement_payer(self, proof: EntitlementProof, resource: str) -> str:
        """The payer an `AGENT-PAY-ENTITLEMENT` proof for `resource` proves."""
        now = int(self._clock())
        if proof.resource != resource:
            raise _invalid(f"the proof is for {proof.resource[:100]!r}, not {resource!r}")
        if not now < proof.expires_at <= now + self.ttl:
            raise _invalid("the challenge has expired; answer the one in this 402")
        challenge = bytes.fromhex(proof.challenge[2:])
        if not hmac.compare_digest(challenge, self._mac(resource, proof.expires_at)):
            raise _invalid("the challenge was not issued by this server for this resource")
        try:
            signer = recover_read_proof_signer(
                resource,
                challenge,
                proof.expires_at,
                self.server,
                bytes.fromhex(proof.signature[2:]),
            )
        except ValueError as exc:
            raise _invalid(f"bad proof signature: {exc}") from None
        if signer != proof.payer:
            raise _invalid("the proof is not signed by the payer's key")
        return signer

    def _mac(self, resource: str, expires_at: int) -> bytes:
        message = f"{resource}\n{expires_at}\n{self.server}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).digest()


class EntitlementHeader(OptionalHeader[EntitlementProof]):
    """Dependency: the decoded `AGENT-PAY-ENTITLEMENT` header, or None without one.

    Raises MalformedPaymentError (400) for a header that cannot be read.
    """

    def __init__(self) -> None:
        super().__init__(ENTITLEMENT_HEADER, EntitlementProof, Reason.ENTITLEMENT_MALFORMED)


def discovery_document(receipt_signer: str, network: list[str]) -> dict[str, Any]:
    """`GET /.well-known/agent-pay`: what a client needs to check receipts and re-read."""
    return {
        "x402Version": 2,
        "networks": network,
        "receiptSigner": receipt_signer,
        "receiptDomain": dict(RECEIPT_DOMAIN),
        "proofDomain": dict(PROOF_DOMAIN),
        "receiptExtension": RECEIPT_EXTENSION,
        "entitlementExtension": ENTITLEMENT_EXTENSION,
        "entitlementHeader": ENTITLEMENT_HEADER,
        "receiptHeader": RECEIPT_HEADER,
    }


def _invalid(message: str) -> PaymentRejectedError:
    return PaymentRejectedError(message, Reason.ENTITLEMENT_INVALID)
