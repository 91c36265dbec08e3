"""`PaymentAuth`: an httpx auth flow that answers HTTP 402 by paying, within a spending policy.

It has the shape httpx's `Auth.auth_flow` was built for — send, get a challenge, retry with a
header — so one generator serves `httpx.Client` and `httpx.AsyncClient` alike::

    with httpx.Client(auth=PaymentAuth(signer, policy)) as http:
        article = http.get("http://127.0.0.1:8402/articles/why-402").json()

On a 402 carrying `PAYMENT-REQUIRED` it picks the first offer the policy allows (in a scheme it
has a `ClientScheme` for), reserves the amount, has the scheme sign it and retries once with
`PAYMENT-SIGNATURE`. Over policy
it raises `PolicyViolationError` and signs nothing. Every confirmed payment is recorded in
`payments` and passed to `on_payment`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import httpx

from agent_pay.client.policy import Spending, SpendingPolicy
from agent_pay.client.schemes import ClientScheme, ExactClientScheme
from agent_pay.errors import MalformedPaymentError
from agent_pay.protocol import (
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    SettleResponse,
)
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)
from agent_pay.signing import Signer, random_nonce

__all__ = ["Decision", "PaymentAuth", "PaymentRecord"]

Decision = Callable[[httpx.Response, PaymentRequired, PaymentRequirements], bool]
"""Called with the 402 (its body holds the free preview), the challenge and the chosen offer;
return False to decline. The 402 is then returned to the caller unpaid."""


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """One payment the server confirmed."""

    url: str
    offer: PaymentRequirements
    settlement: SettleResponse
    signed_at: float
    confirmed_at: float

    @property
    def transaction(self) -> str:
        return self.settlement.transaction


class PaymentAuth(httpx.Auth):
    """Pays for HTTP 402 responses with EIP-3009 authorizations signed by `signer`.

    Args:
        signer: signs the authorizations; the key never leaves it.
        policy: the spending policy, or a `Spending` to share one budget between clients.
        decide: optional last word before paying (see `Decision`).
        on_payment: called with each confirmed `PaymentRecord`.
        clock / nonce_factory: injectable for deterministic tests.
    """

    requires_response_body = True  # the 402 body carries the preview `decide` may read

    def __init__(
        self,
        signer: Signer,
        policy: SpendingPolicy | Spending,
        *,
        schemes: Sequence[ClientScheme] | None = None,
        decide: Decision | None = None,
        on_payment: Callable[[PaymentRecord], None] | None = None,
        clock: Callable[[], float] = time.time,
        nonce_factory: Callable[[], bytes] = random_nonce,
    ) -> None:
        self.signer = signer
        self.spending = policy if isinstance(policy, Spending) else Spending(policy)
        if schemes is None:
            schemes = [ExactClientScheme(signer, clock=clock, nonce_factory=nonce_factory)]
        self.schemes = {s.scheme: s for s in schemes}
        self._decide = decide
        self._on_payment = on_payment
        self._clock = clock
        self._lock = threading.Lock()
        self.payments: list[PaymentRecord] = []

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        header = response.headers.get(PAYMENT_REQUIRED_HEADER)
        if response.status_code != 402 or header is None:
            return
        challenge = decode_header(header, PaymentRequired)
        # Raises when over policy: nothing is signed.
        offer = self.spending.choose(challenge.accepts, schemes=list(self.schemes))
        if self._decide is not None and not self._decide(response, challenge, offer):
            return
        self.spending.reserve(offer)
        signed_at = self._clock()
        request.headers[PAYMENT_SIGNATURE_HEADER] = encode_header(self.sign(offer, challenge))
        paid = yield request
        self._account(paid, request, offer, signed_at)

    def sign(self, offer: PaymentRequirements, challenge: PaymentRequired) -> PaymentPayload:
        """Build and sign the `PAYMENT-SIGNATURE` payload for `offer` (no policy check)."""
        return self.schemes[offer.scheme].sign(offer, challenge)

    def _account(
        self,
        paid: httpx.Response,
        request: httpx.Request,
        offer: PaymentRequirements,
        signed_at: float,
    ) -> None:
        """Settle the budget reservation from the server's answer."""
        header = paid.headers.get(PAYMENT_RESPONSE_HEADER)
        if paid.status_code < 400 and header is not None:
            try:
                settlement = decode_header(header, SettleResponse)
            except MalformedPaymentError:
                return  # unreadable receipt: keep the reservation, never under-count
            if settlement.success:
                self.spending.commit(offer)
                self.schemes[offer.scheme].settled(offer, settlement)
                record = PaymentRecord(
                    str(request.url), offer, settlement, signed_at, self._clock()
                )
                with self._lock:
                    self.payments.append(record)
                if self._on_payment is not None:
                    self._on_payment(record)
            return
        if paid.status_code in (400, 402, 404):
            # Refused before or at settlement: the protocol guarantees no charge.
            self.spending.release(offer)
            self.schemes[offer.scheme].refused(offer, _error_reason(paid))
        # Anything else (5xx, a 2xx without receipt): outcome unknown, keep the reservation.


def _error_reason(response: httpx.Response) -> str | None:
    header = response.headers.get(PAYMENT_REQUIRED_HEADER)
    if header is None:
        return None
    try:
        return decode_header(header, PaymentRequired).error
    except MalformedPaymentError:
        return None
