"""What the server offers for an article, one `OfferBuilder` per payment scheme.

Each builder knows its scheme's `PaymentRequirements`, how to check that a payment's
scheme-specific `payload` is readable at all (an unreadable one is a 400, like a garbled
header), and which `PaymentKey` identifies a payment across retries (the ledger's key). Whether
the payment is acceptable is the facilitator's business.
"""

from __future__ import annotations

from typing import Protocol

from agent_pay.assets import AssetRegistry
from agent_pay.protocol import PaymentPayload, PaymentRequirements
from agent_pay.server.catalogue import Article
from agent_pay.server.ledger import PaymentKey

__all__ = ["DEFAULT_MAX_TIMEOUT_SECONDS", "ExactOffers", "OfferBuilder"]

DEFAULT_MAX_TIMEOUT_SECONDS = 120


class OfferBuilder(Protocol):
    """Builds one scheme's offers and reads its payloads."""

    @property
    def scheme(self) -> str: ...

    def offers(self, article: Article) -> list[PaymentRequirements]:
        """This scheme's offers for `article`, one per token it is priced in."""
        ...

    def check_payload(self, payment: PaymentPayload) -> None:
        """Raise MalformedPaymentError if `payment.payload` does not fit this scheme."""
        ...

    def payment_key(self, payment: PaymentPayload) -> PaymentKey:
        """The ledger key of `payment` (a readable payload): the same for every retry of one
        payment, different for any two payments that could both be charged. The payer is the
        one the payload claims; verification checks the claim before anything is charged.
        Raise MalformedPaymentError if the payload does not fit this scheme."""
        ...


class ExactOffers:
    """x402 "exact": an EIP-3009 transfer of the price to the author, per token."""

    scheme = "exact"

    def __init__(
        self, assets: AssetRegistry, *, max_timeout_seconds: int = DEFAULT_MAX_TIMEOUT_SECONDS
    ) -> None:
        self.assets = assets
        self.max_timeout_seconds = max_timeout_seconds
        self._offers: dict[tuple[object, ...], list[PaymentRequirements]] = {}

    def offers(self, article: Article) -> list[PaymentRequirements]:
        # The same for every request for the article: build (and validate) them once. The key
        # holds everything they are made of; the models are frozen, so sharing them is safe.
        key = (
            article.slug,
            tuple(sorted(article.prices.items())),
            article.author,
            self.max_timeout_seconds,
        )
        cached = self._offers.get(key)
        if cached is None:
            cached = self._offers[key] = self._build(article)
        return list(cached)

    def _build(self, article: Article) -> list[PaymentRequirements]:
        offers = []
        for symbol in sorted(article.prices):
            asset = self.assets.by_symbol(symbol)
            offers.append(
                PaymentRequirements(
                    scheme=self.scheme,
                    network=asset.network,
                    amount=article.price_atomic(symbol, asset.decimals),
                    asset=asset.address,
                    pay_to=article.author,
                    max_timeout_seconds=self.max_timeout_seconds,
                    extra={"name": asset.eip712_name, "version": asset.eip712_version},
                )
            )
        return offers

    def check_payload(self, payment: PaymentPayload) -> None:
        payment.exact_evm()

    def payment_key(self, payment: PaymentPayload) -> PaymentKey:
        """(exact, payer, EIP-3009 nonce): the token accepts each (payer, nonce) once."""
        authorization = payment.exact_evm().authorization
        return PaymentKey(self.scheme, authorization.from_, authorization.nonce)
