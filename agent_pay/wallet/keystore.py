"""An agent's encrypted keystore, and the signer it (or a raw key in the settings) unlocks.

The keystore is Web3 secret storage v3 (what geth, MetaMask and eth-account write), created
with owner-only permissions and never overwritten. The key leaves it only as a `LocalSigner`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from agent_pay.errors import ConfigurationError
from agent_pay.settings import Settings
from agent_pay.signing import LocalSigner

__all__ = ["MIN_PASSWORD_LENGTH", "create_keystore", "signer_from_settings"]

MIN_PASSWORD_LENGTH = 8


def create_keystore(
    path: Path, password: str, *, signer: LocalSigner | None = None, iterations: int | None = None
) -> LocalSigner:
    """Write a new key (or `signer`'s) to `path`, encrypted with `password`; return its signer.

    The file is created with mode 0600 and never replaces an existing one. `iterations`
    (scrypt's n) defaults to eth-account's strong setting; lower it only in tests.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigurationError(
            f"the keystore password must have at least {MIN_PASSWORD_LENGTH} characters"
        )
    signer = signer or LocalSigner.random()
    document = json.dumps(signer.to_keystore(password, iterations=iterations), indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(f"{path} exists already: not overwriting a key") from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(document + "\n")
    return signer


def signer_from_settings(
    settings: Settings, ask_password: Callable[[str], str] | None = None
) -> LocalSigner:
    """The paying key: `private_key` if set, else the keystore, unlocked with
    `keystore_password` or, failing that, `ask_password(prompt)` (an interactive prompt).

    Raises ConfigurationError when there is no key, no password, or the wrong one.
    """
    if settings.private_key is not None:
        return LocalSigner.from_key(settings.private_key.get_secret_value())
    path = settings.keystore
    if not path.is_file():
        raise ConfigurationError(
            f"no keystore at {path}: create one with `agent-pay wallet new`, pass --keystore, "
            f"or set AGENT_PAY_PRIVATE_KEY"
        )
    if settings.keystore_password is not None:
        password = settings.keystore_password.get_secret_value()
    elif ask_password is not None:
        password = ask_password(f"password for {path}: ")
    else:
        raise ConfigurationError(f"{path} is locked: set AGENT_PAY_KEYSTORE_PASSWORD")
    return LocalSigner.from_keystore(path, password)
