"""Who signs: a small `Signer` protocol, and `LocalSigner`, which holds a key in memory.

Higher layers receive a `Signer`, never a private key, so a hardware wallet or a remote signing
service can stand in for `LocalSigner` without touching them. The key in a `LocalSigner` leaves
it only through `unsafe_export_private_key()`; its repr shows the address alone.

A signer that holds its key may also be a `HashSigner`: it signs a 32-byte digest as is, which
lets agent-pay hash its own typed data directly (`agent_pay.signing.eip712`) instead of through
eth-account's generic encoder, and sign the transactions it builds (`agent_pay.chain.txsign`,
for the `Transactor`). A hardware wallet or a remote service should not offer that: it would
sign whatever digest it is handed, unseen.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NoReturn, Protocol, runtime_checkable

from coincurve import PrivateKey
from eth_account import Account
from eth_account.signers.local import LocalAccount

from agent_pay.errors import ConfigurationError

__all__ = ["DEFAULT_KEY_VARIABLE", "HashSigner", "LocalSigner", "Signer"]

DEFAULT_KEY_VARIABLE = "AGENT_PAY_PRIVATE_KEY"


@runtime_checkable
class Signer(Protocol):
    """Anything that can sign EIP-712 typed data for one address."""

    @property
    def address(self) -> str:
        """The EIP-55 checksum address whose key signs."""
        ...

    def sign_typed_data(self, full_message: dict[str, Any]) -> bytes:
        """Sign full typed data ({types, primaryType, domain, message}); 65 bytes r || s || v
        with v in {27, 28}."""
        ...


@runtime_checkable
class HashSigner(Signer, Protocol):
    """A `Signer` that can also sign a bare 32-byte digest (it holds its key)."""

    def unsafe_sign_hash(self, digest: bytes) -> bytes:
        """Sign `digest` as is; 65 bytes r || s || v, v in {27, 28}, exactly the bytes
        `sign_typed_data` returns for typed data whose EIP-712 hash is `digest`.

        Unsafe: whoever picks the digest can make it sign anything (a transaction, a permit).
        Call it only with a digest you computed yourself from typed data you meant to sign.
        """
        ...


class LocalSigner:
    """A `Signer` (and `HashSigner`) backed by an eth-account key held in this process's
    memory."""

    __slots__ = ("_account", "_key")

    def __init__(self, account: LocalAccount) -> None:
        """Wrap an eth-account `LocalAccount`; prefer the `from_*` constructors."""
        self._account = account
        # libsecp256k1's signing: RFC 6979 nonces and low s, as eth-account's coincurve
        # backend, so both paths give the same bytes.
        self._key = PrivateKey(bytes(account.key))

    @classmethod
    def from_key(cls, hex_key: str) -> LocalSigner:
        """From a 32-byte private key as hex, with or without 0x.

        Raises:
            ConfigurationError: if it is not a valid secp256k1 private key.
        """
        text = hex_key.strip() if isinstance(hex_key, str) else ""
        digits = text[2:] if text[:2].lower() == "0x" else text
        if len(digits) != 64:
            _bad_key("expected 64 hex digits")
        try:
            return cls(Account.from_key(bytes.fromhex(digits)))
        except Exception:
            # from None: the original exception could carry the key's bytes in its args.
            _bad_key("not a valid secp256k1 private key")

    @classmethod
    def random(cls) -> LocalSigner:
        """A fresh key from the OS's CSPRNG."""
        return cls(Account.create())

    @classmethod
    def from_keystore(cls, path: Path, password: str) -> LocalSigner:
        """From a Web3 secret storage (v3) JSON file, as geth, MetaMask and eth-account write.

        Raises:
            ConfigurationError: unreadable file, not a keystore, or wrong password.
        """
        try:
            keystore = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigurationError(f"cannot read keystore {path}: {error.strerror}") from None
        except ValueError:
            raise ConfigurationError(f"keystore {path} is not JSON") from None
        if not isinstance(keystore, dict):
            raise ConfigurationError(f"keystore {path} is not a keystore object")
        try:
            key = Account.decrypt(keystore, password)
        except ValueError as error:
            if "MAC mismatch" in str(error):
                raise ConfigurationError(f"wrong password for keystore {path}") from None
            raise ConfigurationError(f"keystore {path} is not a valid keystore") from None
        except Exception:
            raise ConfigurationError(f"keystore {path} is not a valid keystore") from None
        signer = cls(Account.from_key(key))
        stated = keystore.get("address")
        # The address field is not covered by the MAC: check it so a tampered file cannot
        # make us show one address and sign with another.
        if (
            isinstance(stated, str)
            and stated.lower().removeprefix("0x") != (signer.address.lower()[2:])
        ):
            raise ConfigurationError(f"keystore {path} states another address than its key's")
        return signer

    @classmethod
    def from_env(cls, environ: Mapping[str, str], var: str = DEFAULT_KEY_VARIABLE) -> LocalSigner:
        """From a hex private key in `environ[var]`; the caller passes `os.environ` at the edge.

        Raises:
            ConfigurationError: if the variable is unset, empty or not a private key.
        """
        value = environ.get(var, "")
        if not value.strip():
            raise ConfigurationError(f"{var} is not set: it must hold a hex private key")
        try:
            return cls.from_key(value)
        except ConfigurationError as error:
            raise ConfigurationError(
                f"{var} does not hold a valid private key: {error.message}"
            ) from None

    @property
    def address(self) -> str:
        """The EIP-55 checksum address."""
        return str(self._account.address)

    def sign_typed_data(self, full_message: dict[str, Any]) -> bytes:
        """Sign full typed data with eth-account; 65 bytes r || s || v, v in {27, 28}."""
        return bytes(self._account.sign_typed_data(full_message=full_message).signature)

    def unsafe_sign_hash(self, digest: bytes) -> bytes:
        """Sign a 32-byte digest as is (see `HashSigner`); 65 bytes r || s || v, v in {27, 28}.

        Raises:
            ValueError: if `digest` is not 32 bytes.
        """
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise ValueError("digest must be exactly 32 bytes")
        signature = self._key.sign_recoverable(digest, hasher=None)
        return signature[:64] + bytes((signature[64] + 27,))

    def to_keystore(
        self,
        password: str,
        *,
        kdf: Literal["scrypt", "pbkdf2"] = "scrypt",
        iterations: int | None = None,
    ) -> dict[str, Any]:
        """This key encrypted as a Web3 secret storage (v3) JSON object.

        `iterations` (scrypt's n, or pbkdf2's c) defaults to eth-account's strong setting; lower
        it only for tests.
        """
        return dict(
            Account.encrypt(
                self.unsafe_export_private_key(), password, kdf=kdf, iterations=iterations
            )
        )

    def unsafe_export_private_key(self) -> bytes:
        """The raw 32-byte private key. Whoever holds it can spend every token of this address."""
        return bytes(self._account.key)

    def __repr__(self) -> str:
        return f"LocalSigner(address={self.address!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        # Pickling would write the key wherever the pickle goes (a cache, a queue, a log).
        raise TypeError("LocalSigner cannot be pickled; use to_keystore() to persist a key")


def _bad_key(detail: str) -> NoReturn:
    raise ConfigurationError(f"malformed private key: {detail}") from None
