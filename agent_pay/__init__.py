"""agent-pay: pay-per-read for AI agents over HTTP 402 (x402 v2), on an embedded EVM or any node.

The client side, in ten lines::

    from agent_pay import LocalSigner, PaymentAuth, Reader, SpendingPolicy

    signer = LocalSigner.from_keystore(path, password)      # or LocalSigner.from_env(os.environ)
    policy = SpendingPolicy.per_token([usdx], max_per_payment="0.25", budget="5")
    with Reader("http://127.0.0.1:8402", PaymentAuth(signer, policy)) as reader:
        page = reader.preview("why-micropayments-failed")   # free first third, never pays
        page = reader.buy("why-micropayments-failed")       # pays 0.1 USDX, reads it all

`PaymentAuth` is an `httpx.Auth`: it works with any `httpx.Client` or `httpx.AsyncClient`.
"""

from agent_pay.assets import Asset, AssetRegistry, format_amount, parse_amount
from agent_pay.client.auth import PaymentAuth, PaymentRecord
from agent_pay.client.policy import AssetLimit, Spending, SpendingPolicy
from agent_pay.client.reader import BuyRule, InterestRule, Page, Reader, Verdict
from agent_pay.errors import (
    AgentPayError,
    ChainUnavailableError,
    ConfigurationError,
    MalformedPaymentError,
    NoAcceptableOfferError,
    PaymentRejectedError,
    PolicyViolationError,
    Reason,
    SettlementFailedError,
)
from agent_pay.signing import LocalSigner, Signer
from agent_pay.stack import Stack

__version__ = "0.1.0"

__all__ = [
    "AgentPayError",
    "Asset",
    "AssetLimit",
    "AssetRegistry",
    "BuyRule",
    "ChainUnavailableError",
    "ConfigurationError",
    "InterestRule",
    "LocalSigner",
    "MalformedPaymentError",
    "NoAcceptableOfferError",
    "Page",
    "PaymentAuth",
    "PaymentRecord",
    "PaymentRejectedError",
    "PolicyViolationError",
    "Reader",
    "Reason",
    "SettlementFailedError",
    "Signer",
    "Spending",
    "SpendingPolicy",
    "Stack",
    "Verdict",
    "format_amount",
    "parse_amount",
]
