"""Throwaway development accounts, the same ones anvil and hardhat fund by default.

THESE KEYS ARE PUBLIC. They come from the well-known mnemonic "test test ... junk" that every
Ethereum dev tool ships; anyone can spend what they hold. Use them on local chains only.
"""

from __future__ import annotations

from functools import cache

from eth_account import Account
from eth_account.hdaccount import key_from_seed, seed_from_mnemonic
from eth_account.signers.local import LocalAccount

from agent_pay.signing.signer import LocalSigner

__all__ = ["DEV_MNEMONIC", "dev_account", "dev_accounts", "dev_signer"]

DEV_MNEMONIC = "test test test test test test test test test test test junk"  # throwaway, public
_PATH = "m/44'/60'/0'/0/{}"


@cache
def _seed() -> bytes:
    # PBKDF2 with 2048 rounds: derive the seed once, then each account is a cheap BIP-32 step.
    return seed_from_mnemonic(DEV_MNEMONIC, passphrase="")


@cache
def dev_account(index: int) -> LocalAccount:
    """Throwaway dev account `index` of the public test mnemonic (anvil's account `index`)."""
    if index < 0:
        raise ValueError("account index must be non-negative")
    key = key_from_seed(_seed(), _PATH.format(index))
    account: LocalAccount = Account.from_key(key)
    return account


@cache
def dev_signer(index: int) -> LocalSigner:
    """A signer for throwaway dev account `index` (to send its transactions: `Transactor`)."""
    return LocalSigner(dev_account(index))


def dev_accounts(count: int = 10) -> list[LocalAccount]:
    """The first `count` throwaway dev accounts."""
    return [dev_account(i) for i in range(count)]
