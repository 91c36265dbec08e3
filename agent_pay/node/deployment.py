"""Where agent-pay's stablecoins live on a node: deploy them, find them, mint them.

On a fresh local chain, `deploy_default_stablecoins` deploys USDX and CNYX from throwaway dev
account #0 as its first two transactions, so they land at fixed, computable addresses
(`DEV_TOKEN_ADDRESSES`): the same on `agent-pay node` and on a fresh anvil after
`agent-pay deploy`. Anywhere else, a token list says where the tokens are.

Every token found is read back from the chain (symbol, decimals, EIP-712 domain, chain id), so
a wrong address or a wrong node is an error here, not a bad payment later.
"""

from __future__ import annotations

from collections.abc import Mapping

import rlp
from eth_abi.exceptions import DecodingError
from eth_utils import keccak, to_canonical_address, to_checksum_address

from agent_pay.chain.base import Chain, ContractRevertError
from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_account
from agent_pay.chain.stablecoin import DEFAULT_STABLECOINS, Stablecoin, deploy_stablecoins
from agent_pay.errors import ConfigurationError

__all__ = [
    "DEPLOYER_INDEX",
    "DEV_CHAIN_IDS",
    "DEV_TOKEN_ADDRESSES",
    "create_address",
    "deploy_default_stablecoins",
    "find_stablecoins",
    "is_dev_chain",
]

DEPLOYER_INDEX = 0  # throwaway dev account that deploys the default tokens and may mint them
DEV_CHAIN_IDS = frozenset({31337, 1337})  # anvil/hardhat and ganache: local chains only


def create_address(sender: str, nonce: int) -> str:
    """The address a CREATE from `sender` at `nonce` deploys to."""
    encoded = rlp.encode([to_canonical_address(sender), nonce])
    return to_checksum_address(keccak(encoded)[12:])


DEV_TOKEN_ADDRESSES: Mapping[str, str] = {
    spec.symbol: create_address(dev_account(DEPLOYER_INDEX).address, nonce)
    for nonce, spec in enumerate(DEFAULT_STABLECOINS)
}
"""Where the default stablecoins land when dev account #0 deploys them first thing."""


def is_dev_chain(chain: Chain) -> bool:
    """A local development chain, where the public dev keys may be used."""
    return chain.chain_id in DEV_CHAIN_IDS


def deploy_default_stablecoins(
    chain: Chain, owner: Transactor | None = None
) -> dict[str, Stablecoin]:
    """Deploy USDX and CNYX with `owner` (dev account #0 by default) as minter."""
    owner = owner or Transactor(chain, dev_account(DEPLOYER_INDEX))
    return deploy_stablecoins(owner)


def find_stablecoins(
    chain: Chain, tokens: Mapping[str, str] | None = None
) -> dict[str, Stablecoin]:
    """Attach to the stablecoins named in `tokens` (symbol -> address), or on a dev chain with
    no list, to the default tokens at `DEV_TOKEN_ADDRESSES`.

    Raises:
        ConfigurationError: an address holds no token, another token, or one for another chain.
        ChainError: the node cannot be asked.
    """
    if not tokens:
        if not is_dev_chain(chain):
            raise ConfigurationError(
                f"chain {chain.chain_id} is not a local dev chain: give the token addresses "
                f"(--token SYMBOL=ADDRESS, or AGENT_PAY_TOKENS)"
            )
        tokens = DEV_TOKEN_ADDRESSES
        missing = [s for s, a in tokens.items() if not chain.get_code(a)]
        if missing:
            raise ConfigurationError(
                "no agent-pay stablecoins at the default addresses on this chain: run "
                "`agent-pay deploy --chain URL` first (on a fresh node), or give the addresses "
                "with --token SYMBOL=ADDRESS"
            )
    found: dict[str, Stablecoin] = {}
    for symbol, address in tokens.items():
        try:
            if not chain.get_code(address):
                raise ConfigurationError(f"{symbol}: no contract at {address}")
            token = Stablecoin.at(chain, address)
        except (ValueError, ContractRevertError, DecodingError) as exc:
            raise ConfigurationError(
                f"{symbol}: {address} is not an agent-pay stablecoin on chain {chain.chain_id}"
            ) from exc
        if token.asset.symbol != symbol:
            raise ConfigurationError(
                f"{address} is the token {token.asset.symbol!r}, not {symbol!r}"
            )
        found[symbol] = token
    return found
