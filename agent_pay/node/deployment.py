"""Where agent-pay's contracts live on a node: deploy them, find them.

On a fresh local chain, `deploy_default_stablecoins` deploys USDX and CNYX from throwaway dev
account #0 as its first two transactions, and `deploy_channel_manager` the channel contract as
its third, so they land at fixed, computable addresses (`DEV_TOKEN_ADDRESSES`,
`DEV_CHANNEL_MANAGER_ADDRESS`): the same on `agent-pay node` and on a fresh anvil after
`agent-pay deploy`. Anywhere else, settings say where they are (a token list, a channel
manager address).

Every contract found is read back from the chain (symbol, decimals, EIP-712 domain, chain id),
so a wrong address or a wrong node is an error here, not a bad payment later.
"""

from __future__ import annotations

from collections.abc import Mapping

import rlp
from eth_abi.exceptions import DecodingError
from eth_utils import keccak, to_canonical_address, to_checksum_address

from agent_pay.chain.base import Chain, ContractRevertError
from agent_pay.chain.channel import DEFAULT_GRACE_PERIOD, ChannelManager
from agent_pay.chain.contract import Transactor
from agent_pay.chain.dev_roles import DEPLOYER_INDEX
from agent_pay.chain.devkeys import dev_account, dev_signer
from agent_pay.chain.stablecoin import DEFAULT_STABLECOINS, Stablecoin, deploy_stablecoins
from agent_pay.errors import ConfigurationError
from agent_pay.protocol.base import normalize_address

__all__ = [
    "DEPLOYER_INDEX",
    "DEV_CHAIN_IDS",
    "DEV_CHANNEL_MANAGER_ADDRESS",
    "DEV_TOKEN_ADDRESSES",
    "create_address",
    "deploy_channel_manager",
    "deploy_default_stablecoins",
    "find_channel_manager",
    "find_stablecoins",
    "is_dev_chain",
]

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

DEV_CHANNEL_MANAGER_ADDRESS = create_address(
    dev_account(DEPLOYER_INDEX).address, len(DEFAULT_STABLECOINS)
)
"""Where the channel contract lands when dev account #0 deploys it right after the tokens."""


def is_dev_chain(chain: Chain) -> bool:
    """A local development chain, where the public dev keys may be used."""
    return chain.chain_id in DEV_CHAIN_IDS


def deploy_default_stablecoins(
    chain: Chain, owner: Transactor | None = None
) -> dict[str, Stablecoin]:
    """Deploy USDX and CNYX with `owner` (dev account #0 by default) as minter."""
    owner = owner or Transactor(chain, dev_signer(DEPLOYER_INDEX))
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


def deploy_channel_manager(
    chain: Chain, deployer: Transactor | None = None, grace_period: int = DEFAULT_GRACE_PERIOD
) -> ChannelManager:
    """Deploy the channel contract from `deployer` (dev account #0 by default; it gains no
    powers over the contract) with payers waiting `grace_period` seconds to withdraw."""
    deployer = deployer or Transactor(chain, dev_signer(DEPLOYER_INDEX))
    return ChannelManager.deploy(deployer, grace_period)


def find_channel_manager(chain: Chain, address: str | None = None) -> ChannelManager | None:
    """Attach to the channel contract at `address`, or on a dev chain with no address, to the
    one at `DEV_CHANNEL_MANAGER_ADDRESS` if it is deployed there. None when no address is given
    and there is none at the default address (the channel scheme is then not available).

    Raises:
        ConfigurationError: the address holds no channel contract for this chain.
        ChainError: the node cannot be asked.
    """
    if address is None:
        if not is_dev_chain(chain) or not chain.get_code(DEV_CHANNEL_MANAGER_ADDRESS):
            return None
        address = DEV_CHANNEL_MANAGER_ADDRESS
    try:
        address = normalize_address(address)
    except ValueError as exc:
        raise ConfigurationError(f"channel manager: {exc}") from None
    if not chain.get_code(address):
        raise ConfigurationError(
            f"channel manager: no contract at {address} on chain {chain.chain_id} (run "
            f"`agent-pay deploy --chain URL`, or set AGENT_PAY_CHANNEL_MANAGER)"
        )
    try:
        return ChannelManager.at(chain, address)
    except (ValueError, ContractRevertError, DecodingError) as exc:
        raise ConfigurationError(
            f"{address} is not an agent-pay channel contract on chain {chain.chain_id}"
        ) from exc
