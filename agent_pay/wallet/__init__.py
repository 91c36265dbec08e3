"""An agent's wallet on disk: an encrypted keystore, the signer it unlocks, its balances; and
the content server's receipt key.

    keystore      create_keystore, signer_from_settings: the paying key (keystore or raw key)
    receipt_key   server_receipt_key: the key a content server signs receipts with
    balance       Balances, balances: what an address holds on a chain
"""

from agent_pay.wallet.balance import Balances, balances
from agent_pay.wallet.keystore import create_keystore, signer_from_settings
from agent_pay.wallet.receipt_key import server_receipt_key

__all__ = ["Balances", "balances", "create_keystore", "server_receipt_key", "signer_from_settings"]
