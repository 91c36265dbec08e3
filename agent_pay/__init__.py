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

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: the CLI starts before `typing` loads
if TYPE_CHECKING:
    from typing import Any

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

_HOMES = {
    "Asset": "agent_pay.assets",
    "AssetRegistry": "agent_pay.assets",
    "format_amount": "agent_pay.assets",
    "parse_amount": "agent_pay.assets",
    "PaymentAuth": "agent_pay.client.auth",
    "PaymentRecord": "agent_pay.client.auth",
    "AssetLimit": "agent_pay.client.policy",
    "Spending": "agent_pay.client.policy",
    "SpendingPolicy": "agent_pay.client.policy",
    "BuyRule": "agent_pay.client.reader",
    "InterestRule": "agent_pay.client.reader",
    "Page": "agent_pay.client.reader",
    "Reader": "agent_pay.client.reader",
    "Verdict": "agent_pay.client.reader",
    "LocalSigner": "agent_pay.signing",
    "Signer": "agent_pay.signing",
    "Stack": "agent_pay.stack",
    **dict.fromkeys(
        [
            "AgentPayError",
            "ChainUnavailableError",
            "ConfigurationError",
            "MalformedPaymentError",
            "NoAcceptableOfferError",
            "PaymentRejectedError",
            "PolicyViolationError",
            "Reason",
            "SettlementFailedError",
        ],
        "agent_pay.errors",
    ),
}
"""Where each public name is defined. They load on first use, so that `agent-pay --help` (and
any command that needs neither the chain nor the server) does not import py-evm, web3 or
FastAPI first."""


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'agent_pay' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
