"""Sign-In with Ethereum (EIP-4361) messages, as x402's `sign-in-with-x` has them signed.

The message is text, signed with EIP-191 (`personal_sign`): eth-account's `encode_defunct`
prefixes and hashes it, so nothing here hand-rolls a digest. The text is rebuilt from the
`SIGN-IN-WITH-X` fields exactly as EIP-4361 (and the SIWE library x402's client uses) lays
it out, so a signature over any other message does not recover the claimed address.
"""

from __future__ import annotations

import re
from typing import Final

from eth_account.messages import encode_defunct

from agent_pay.protocol.siwx import SiwxPayload
from agent_pay.signing.signature import recover_signable

__all__ = ["evm_chain_id", "recover_siwe_signer", "siwe_message"]

_EIP155: Final = re.compile(r"eip155:([1-9][0-9]{0,19})")


def evm_chain_id(chain_id: str) -> int:
    """The number of a CAIP-2 `eip155:<n>` chain id.

    Raises:
        ValueError: not an `eip155` chain id.
    """
    match = _EIP155.fullmatch(chain_id)
    if match is None:
        raise ValueError(f"{chain_id[:40]!r} is not an eip155:<chain id>")
    return int(match.group(1))


def siwe_message(payload: SiwxPayload) -> str:
    """The EIP-4361 text that `payload.signature` must sign.

    Raises:
        ValueError: `payload.chain_id` is not an `eip155` chain.
    """
    header = f"{payload.domain} wants you to sign in with your Ethereum account:"
    prefix = f"{header}\n{payload.address}"
    prefix = f"{prefix}\n\n{payload.statement}" if payload.statement is not None else prefix + "\n"
    fields = [
        f"URI: {payload.uri}",
        f"Version: {payload.version}",
        f"Chain ID: {evm_chain_id(payload.chain_id)}",
        f"Nonce: {payload.nonce}",
        f"Issued At: {payload.issued_at}",
    ]
    if payload.expiration_time:
        fields.append(f"Expiration Time: {payload.expiration_time}")
    if payload.not_before:
        fields.append(f"Not Before: {payload.not_before}")
    if payload.request_id is not None:
        fields.append(f"Request ID: {payload.request_id}")
    if payload.resources is not None:
        fields.append("\n".join(["Resources:", *(f"- {r}" for r in payload.resources)]))
    return prefix + "\n\n" + "\n".join(fields)


def recover_siwe_signer(payload: SiwxPayload) -> str:
    """The checksum address whose key signed the EIP-4361 message of `payload` (EIP-191).

    Raises:
        ValueError: malformed or high-s signature, or a chain id that is not `eip155`.
    """
    signable = encode_defunct(text=siwe_message(payload))
    return recover_signable(signable, bytes.fromhex(payload.signature[2:]))
