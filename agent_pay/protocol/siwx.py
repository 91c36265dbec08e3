"""x402's `sign-in-with-x` extension (CAIP-122 / EIP-4361), for EVM accounts.

A 402 declares it in `extensions["sign-in-with-x"]`: `info` (the message the server wants
signed: domain, uri, nonce, times, statement), `supportedChains` (CAIP-2 chain ids with the
signature type, `eip191` for EVM) and `schema` (a JSON Schema of the client's proof). A payer
proves its address by signing that message, as EIP-4361 text under EIP-191, and sending the
fields back, with `address` and `signature`, in the `SIGN-IN-WITH-X` header: standard base64
of JSON (`SiwxPayload`). Pure wire types; the message text and its signature are in
`agent_pay.signing.siwe`, the server's checks in `agent_pay.server.siwx`.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import BeforeValidator, Field

from agent_pay.protocol.base import Address, WireModel
from agent_pay.protocol.declaration import object_schema
from agent_pay.protocol.exact import SignatureHex

__all__ = [
    "SIGN_IN_WITH_X",
    "SIWX_HEADER",
    "SIWX_SIGNATURE_TYPE",
    "SiwxInfo",
    "SiwxPayload",
    "SupportedChain",
    "siwx_schema",
]

SIGN_IN_WITH_X: Final = "sign-in-with-x"
SIWX_HEADER: Final = "SIGN-IN-WITH-X"
SIWX_SIGNATURE_TYPE: Final = "eip191"
"""The only signature type accepted: an EOA's EIP-191 signature of the EIP-4361 text."""

_MAX_FIELD: Final = 2048


def _text(value: object) -> str:
    # EIP-4361 is line-based: a newline inside a field would let a client sign another message.
    if not isinstance(value, str) or len(value) > _MAX_FIELD or "\n" in value or "\r" in value:
        raise ValueError(f"must be one line of at most {_MAX_FIELD} characters")
    return value


Text = Annotated[str, BeforeValidator(_text)]


class SupportedChain(WireModel):
    """A chain the server accepts sign-ins for, and how they are signed."""

    chain_id: str
    type: str
    signature_scheme: str | None = None


class SiwxInfo(WireModel):
    """`info` of the declaration: the fields of the message to sign (all but the address)."""

    domain: Text
    uri: Text
    version: Text = "1"
    nonce: Text
    issued_at: Text
    expiration_time: Text | None = None
    not_before: Text | None = None
    statement: Text | None = None
    request_id: Text | None = None
    resources: list[Text] | None = None


class SiwxPayload(WireModel):
    """The `SIGN-IN-WITH-X` header: the message's fields, the signer and its signature."""

    domain: Text
    address: Address
    uri: Text
    version: Text
    chain_id: Text
    type: Text
    nonce: Text
    issued_at: Text
    statement: Text | None = None
    expiration_time: Text | None = None
    not_before: Text | None = None
    request_id: Text | None = None
    resources: list[Text] | None = Field(default=None, max_length=16)
    signature_scheme: Text | None = None
    signature: SignatureHex


def siwx_schema() -> dict[str, Any]:
    """The JSON Schema of the client's proof, as x402's spec publishes it."""
    text = {"type": "string"}
    when = {"type": "string", "format": "date-time"}
    return object_schema(
        {
            "domain": text,
            "address": text,
            "statement": text,
            "uri": {"type": "string", "format": "uri"},
            "version": text,
            "chainId": text,
            "type": text,
            "nonce": text,
            "issuedAt": when,
            "expirationTime": when,
            "notBefore": when,
            "requestId": text,
            "resources": {"type": "array", "items": {"type": "string", "format": "uri"}},
            "signature": text,
        },
        [
            "domain",
            "address",
            "uri",
            "version",
            "chainId",
            "type",
            "nonce",
            "issuedAt",
            "signature",
        ],
    )
