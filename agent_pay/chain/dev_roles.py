"""Which throwaway dev account plays which part on a dev chain (anvil's and `agent-pay node`'s
accounts of the public "test ... junk" mnemonic: see `agent_pay.chain.devkeys`).

A module of plain numbers, so that the CLI can name them without loading eth-account.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DEPLOYER_INDEX",
    "FACILITATOR_INDEX",
    "FACILITATOR_SERVICE_INDEX",
    "STOCK_FACILITATOR_INDEX",
]

DEPLOYER_INDEX: Final = 0
"""Deploys the tokens and is their only minter."""

FACILITATOR_INDEX: Final = 1
"""Pays settlement gas for a content server that settles itself (`agent-pay serve`, `Stack`)."""

STOCK_FACILITATOR_INDEX: Final = 2
"""Pays the gas of the stock x402 facilitator the benchmark compares against."""

FACILITATOR_SERVICE_INDEX: Final = 3
"""Pays settlement gas for `agent-pay facilitator`: never the server's, so that a server and a
facilitator on one dev chain never clash over one account's nonces."""
