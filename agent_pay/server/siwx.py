"""Sign-in-with-x on the server: a stock x402 client proves its address, and re-reads.

Every 402 declares `sign-in-with-x` (see `agent_pay.protocol.siwx`) with a message for the
payer to sign. Its nonce (32 hex digits, as x402 asks) is stateless, like the re-read
challenges of `agent_pay.server.entitlements`: 8 random bytes, then the first 8 bytes of an
HMAC, under a secret only this server holds, of (those bytes, domain, uri, issuedAt,
expirationTime). The server keeps nothing per nonce it issues; a nonce made for another
resource, by another server or with other times does not verify. It does remember the nonces
of the sign-ins it *accepted*, until they expire, so the same signed message is accepted once:
per process (`MemoryNonces`, the default), or across every instance on a shared store
(`agent_pay.store.postgres.nonces`).

`SignInWithX.verify` checks a `SIGN-IN-WITH-X` proof against the request it came with and
returns the address that signed it; what that address may read is the caller's business
(`Entitlements.proven_payer`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import anyio.to_thread

from agent_pay.errors import PaymentRejectedError, Reason
from agent_pay.protocol.siwx import (
    SIGN_IN_WITH_X,
    SIWX_HEADER,
    SIWX_SIGNATURE_TYPE,
    SiwxPayload,
    SupportedChain,
    siwx_schema,
)
from agent_pay.server.optional_header import OptionalHeader
from agent_pay.server.refusals import ledger_down
from agent_pay.signing.siwe import recover_siwe_signer
from agent_pay.store.errors import STORE_ERRORS
from agent_pay.store.protocols import SpentNonces

__all__ = [
    "DEFAULT_STATEMENT",
    "SIWX_TTL_SECONDS",
    "MemoryNonces",
    "SignInWithX",
    "SiwxHeader",
    "resource_uri",
]

SIWX_TTL_SECONDS: Final = 300
"""How long a declared sign-in message may be signed and presented."""
DEFAULT_STATEMENT: Final = "Sign in to read again what this address bought"
_CLOCK_SKEW: Final = 5  # seconds an issuedAt may lie ahead of our clock (another server's)
_PRUNE_AT: Final = 4096  # accepted nonces kept before expired ones are swept
_SALT_HEX: Final = 16  # a nonce: 8 random bytes, then 8 bytes of MAC, in hex
_MAC_HEX: Final = 16
_SCHEMA: Final = siwx_schema()  # shared by every declaration: never changed


def resource_uri(url: str) -> str:
    """The `uri` a sign-in for `url` names: scheme, host and path (no query, no fragment)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _seconds(value: str, name: str) -> float:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _invalid(f"{name} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class MemoryNonces:
    """The sign-in nonces this process accepted, until they expire (`SpentNonces`)."""

    def __init__(self) -> None:
        self._accepted: dict[str, float] = {}  # nonce -> expiry

    def spend(self, nonce: str, expires: float, now: float) -> bool:
        if nonce in self._accepted:
            return False
        if len(self._accepted) >= _PRUNE_AT:
            self._accepted = {n: e for n, e in self._accepted.items() if e > now}
        self._accepted[nonce] = expires
        return True


class SignInWithX:
    """Declares sign-in messages in 402s and checks the signed ones sent back.

    Args:
        networks: the CAIP-2 chains sign-ins are accepted for (`eip155:<n>`).
        secret: the HMAC key of nonces (random by default: nonces die with the process).
        ttl: seconds between `issuedAt` and `expirationTime`.
        statement: the human-readable line of the message.
        nonces: where accepted nonces are kept (this process's memory by default).
    """

    def __init__(
        self,
        networks: Iterable[str],
        *,
        secret: bytes | None = None,
        ttl: int = SIWX_TTL_SECONDS,
        statement: str = DEFAULT_STATEMENT,
        clock: Callable[[], float] = time.time,
        nonces: SpentNonces | None = None,
    ) -> None:
        self.networks = sorted({n for n in networks if n.startswith("eip155:")})
        self._secret = secret or secrets.token_bytes(32)
        self.ttl = ttl
        self.statement = statement
        self._clock = clock
        self._spent: SpentNonces = nonces if nonces is not None else MemoryNonces()
        self._chains = [
            SupportedChain(chain_id=n, type=SIWX_SIGNATURE_TYPE).to_wire() for n in self.networks
        ]

    def declaration(self, url: str) -> dict[str, Any]:
        """The `extensions["sign-in-with-x"]` entry of a 402 for `url` (`SiwxInfo` on the wire,
        built directly: this is every 402)."""
        uri = resource_uri(url)
        domain = urlsplit(url).netloc
        issued = int(self._clock())
        issued_at, expires_at = _iso(issued), _iso(issued + self.ttl)
        info = {
            "domain": domain,
            "uri": uri,
            "version": "1",
            "nonce": self._nonce(domain, uri, issued_at, expires_at),
            "issuedAt": issued_at,
            "expirationTime": expires_at,
            "statement": self.statement,
            "resources": [uri],
        }
        return {"info": info, "supportedChains": self._chains, "schema": _SCHEMA}

    def verify(self, payload: SiwxPayload, url: str, *, spend: bool = True) -> str:
        """The address that signed `payload`, a sign-in sent with a request for `url`.

        With `spend` (the default) the sign-in is used up: the same message is refused from
        then on, until it would have expired anyway.

        Raises:
            PaymentRejectedError: `Reason.ENTITLEMENT_INVALID`, saying why.
        """
        signer, expires, now = self._checked(payload, url)
        if spend:
            self._spend(payload.nonce, expires, now)
        return signer

    async def use(self, payload: SiwxPayload, url: str) -> str:
        """`verify` with the sign-in used up, for a request being served: where the used
        nonces are kept elsewhere (a shared store) that write runs in a worker thread, off
        the event loop; this process's own memory is written inline."""
        signer, expires, now = self._checked(payload, url)
        if isinstance(self._spent, MemoryNonces):
            self._spend(payload.nonce, expires, now)
        else:
            await anyio.to_thread.run_sync(self._spend, payload.nonce, expires, now)
        return signer

    def _checked(self, payload: SiwxPayload, url: str) -> tuple[str, float, float]:
        """The signer of `payload` for `url`, its expiry and now (see `verify`)."""
        parts = urlsplit(url)
        if payload.domain != parts.netloc:
            raise _invalid(f"the sign-in is for {payload.domain[:100]!r}, not {parts.netloc!r}")
        if payload.uri != resource_uri(url):
            raise _invalid(f"the sign-in is for {payload.uri[:200]!r}, not this resource")
        if payload.version != "1" or payload.type != SIWX_SIGNATURE_TYPE:
            raise _invalid(f"only version 1 sign-ins of type {SIWX_SIGNATURE_TYPE} are accepted")
        if payload.chain_id not in self.networks:
            raise _invalid(f"sign-ins are accepted for {', '.join(self.networks)} only")
        if payload.expiration_time is None:
            raise _invalid("the sign-in has no expirationTime; sign the one in this 402")
        salt = payload.nonce[:_SALT_HEX]
        expected = self._nonce(
            payload.domain, payload.uri, payload.issued_at, payload.expiration_time, salt
        )
        if not hmac.compare_digest(payload.nonce.encode(), expected.encode()):
            raise _invalid("the nonce was not issued by this server for this message")
        now = self._clock()
        if _seconds(payload.issued_at, "issuedAt") > now + _CLOCK_SKEW:
            raise _invalid("the sign-in was issued in the future")
        expires = _seconds(payload.expiration_time, "expirationTime")
        if expires <= now:
            raise _invalid("the sign-in has expired; sign the one in this 402")
        if payload.not_before and _seconds(payload.not_before, "notBefore") > now:
            raise _invalid("the sign-in is not valid yet (notBefore)")
        try:
            signer = recover_siwe_signer(payload)
        except ValueError as exc:
            raise _invalid(f"bad sign-in signature: {exc}") from None
        if signer != payload.address:
            raise _invalid("the sign-in is not signed by its address's key")
        return signer, expires, now

    def _spend(self, nonce: str, expires: float, now: float) -> None:
        try:
            fresh = self._spent.spend(nonce, expires, now)
        except STORE_ERRORS as exc:
            raise ledger_down(exc) from exc
        if not fresh:
            raise _invalid("this sign-in was used already; sign the one in this 402")

    def _nonce(
        self, domain: str, uri: str, issued_at: str, expires_at: str, salt: str | None = None
    ) -> str:
        """A fresh nonce (`salt` None), or the one `salt` starts (to check a nonce)."""
        salt = secrets.token_hex(_SALT_HEX // 2) if salt is None else salt
        message = f"{SIGN_IN_WITH_X}\n{salt}\n{domain}\n{uri}\n{issued_at}\n{expires_at}"
        mac = hmac.new(self._secret, message.encode(), hashlib.sha256).digest()
        return salt + mac[: _MAC_HEX // 2].hex()


class SiwxHeader(OptionalHeader[SiwxPayload]):
    """Dependency: the decoded `SIGN-IN-WITH-X` header, or None without one.

    Raises MalformedPaymentError (400, `invalid_siwx_header`) for a header that cannot be read.
    """

    def __init__(self) -> None:
        super().__init__(SIWX_HEADER, SiwxPayload, Reason.SIWX_MALFORMED)


def _invalid(message: str) -> PaymentRejectedError:
    return PaymentRejectedError(message, Reason.ENTITLEMENT_INVALID)
