"""The public API is a promise: changing it must be a deliberate act."""

import agent_pay


def test_public_names_are_locked() -> None:
    assert sorted(agent_pay.__all__) == [
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


def test_every_public_name_exists() -> None:
    for name in agent_pay.__all__:
        assert getattr(agent_pay, name) is not None
