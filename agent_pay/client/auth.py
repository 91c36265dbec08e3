"""`PaymentAuth`: an httpx auth flow that answers HTTP 402 by paying, within a spending policy.

It has the shape httpx's `Auth.auth_flow` was built for — send, get a challenge, retry with a
header — so one generator serves `httpx.Client` and `httpx.AsyncClient` alike::

    with httpx.Client(auth=PaymentAuth(signer, policy)) as http:
        article = http.get("http://127.0.0.1:8402/articles/why-402").json()

On a 402 carrying `PAYMENT-REQUIRED` it tries, in order:

1. **re-read**: if it bought this URL before (its `ReceiptStore` holds a receipt for it, or a
   purchase that came without one: a read paid by channel voucher) and the 402 carries an
   agent-pay entitlement challenge, it signs the challenge with the paying key and retries with
   `AGENT-PAY-ENTITLEMENT`. Nothing is paid and the budget is not touched.
2. **resume**: if an earlier payment to this URL never got an answer (timeout, dropped
   connection, crash), it sends that very `PAYMENT-SIGNATURE` again: the server treats it as
   the same payment, so it is charged at most once.
3. **pay**: it picks the first offer the policy allows (in a scheme it has a `ClientScheme`
   for), reserves the amount, has the scheme sign it, writes the header down as pending, and
   retries once. Over policy it raises `PolicyViolationError` and signs nothing.

Every confirmed payment is recorded in `payments` and passed to `on_payment`; the receipt that
came with it (checked: signed by the key it names, for this payer, URL, amount and
transaction) is kept in the store for later re-reads. A payment whose answer carried no valid
receipt (a voucher read: the server signs none per voucher) is kept as a purchase instead, and
re-read the same way; the re-read's answer carries the server's signed receipt.

With an `httpx.AsyncClient`, each step of the flow between two requests (the store's fsync'd
writes, lock waits, signing, and the `decide` and `on_payment` callbacks) runs in a worker
thread, one step at a time, so the event loop never waits on them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from dataclasses import dataclass
from enum import Enum

import anyio.to_thread
import httpx

from agent_pay.client.entitlements import (
    entitlement_challenge,
    entitlement_proof,
    error_reason,
    paid_receipt,
    reread_receipt,
)
from agent_pay.client.policy import Spending, SpendingPolicy
from agent_pay.client.receipts import PendingPayment, ReceiptStore
from agent_pay.client.schemes import ClientScheme, ExactClientScheme
from agent_pay.errors import MalformedPaymentError, Reason
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
from agent_pay.protocol.extensions import ENTITLEMENT_HEADER, SignedReceipt
from agent_pay.signing import Signer, random_nonce

__all__ = ["Decision", "PaymentAuth", "PaymentRecord"]

log = logging.getLogger(__name__)

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
    receipt: SignedReceipt | None = None

    @property
    def transaction(self) -> str:
        return self.settlement.transaction


@dataclass(frozen=True, slots=True)
class _Sent:
    """A payment on its way: as written down (`pending`), and as signed (`payment`, the ticket
    its scheme gets back with the answer)."""

    pending: PendingPayment
    payment: PaymentPayload

    @classmethod
    def resent(cls, pending: PendingPayment) -> _Sent:
        return cls(pending, decode_header(pending.header, PaymentPayload))


class _Outcome(Enum):
    PAID = "paid"
    REFUSED = "refused"
    SPENT = "spent"  # refused as already used: paid, but the answer never reached us
    UNKNOWN = "unknown"


class PaymentAuth(httpx.Auth):
    """Pays for HTTP 402 responses with EIP-3009 authorizations signed by `signer`.

    Args:
        signer: signs the authorizations and re-read proofs; the key never leaves it.
        policy: the spending policy, or a `Spending` to share one budget between clients.
        receipts: where receipts and pending payments are kept (`ReceiptStore.open(dir)` to
            survive restarts); in memory by default.
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
        receipts: ReceiptStore | None = None,
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
        self.receipts = receipts if receipts is not None else ReceiptStore.in_memory()
        self._decide = decide
        self._on_payment = on_payment
        self._clock = clock
        self._lock = threading.Lock()
        # Headers whose amount this process reserved: a payment whose answer was lost is
        # resent by a later request, which must know whether the reservation is ours to drop.
        self._reserved: set[str] = set()
        self.payments: list[PaymentRecord] = []
        self.rereads: list[str] = []  # URLs read again by key proof, without paying

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """`auth_flow` for an `httpx.AsyncClient`, each step between two requests run in a
        worker thread (see the module doc)."""
        response = yield request
        if not _asks_for_payment(response):
            return  # nothing to pay, nothing to wait on: the answer stays on the loop
        await response.aread()
        flow = self.auth_flow(request)
        try:
            step: httpx.Request | None = next(flow)  # up to its first send: `request`
            while step is not None:
                step = await anyio.to_thread.run_sync(_resume, flow, response)
                if step is not None:
                    response = yield step
                    await response.aread()
        finally:
            flow.close()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        payer = self.signer.address
        tried_proof = tried_pending = False
        spent: _Sent | None = None  # our payment the server says is already used
        while _asks_for_payment(response):
            challenge = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
            offer_to_prove = entitlement_challenge(challenge)
            if (
                offer_to_prove is not None
                and not tried_proof
                and (spent is not None or self.receipts.bought(request.url, payer))
            ):
                tried_proof = True
                # Beside a spent payment of ours, the proof also claims it: the server then
                # serves what that payment bought even if its header alone no longer reads.
                request.headers.pop(PAYMENT_SIGNATURE_HEADER, None)
                if spent is not None:
                    request.headers[PAYMENT_SIGNATURE_HEADER] = spent.pending.header
                stored = self.receipts.find(request.url, payer)
                receipt = stored.receipt if stored is not None else None
                proof = entitlement_proof(self.signer, request.url, offer_to_prove, receipt)
                request.headers[ENTITLEMENT_HEADER] = proof
                response = yield request
                del request.headers[ENTITLEMENT_HEADER]
                request.headers.pop(PAYMENT_SIGNATURE_HEADER, None)
                if spent is not None:
                    self._recover(response, request, spent)
                    return
                if response.status_code < 400:
                    self._keep_reread_receipt(request, response)
                    with self._lock:
                        self.rereads.append(str(request.url))
                    return
                continue
            pending = None if tried_pending else self.receipts.pending(request.url, payer)
            if pending is not None:
                tried_pending = True
                resent = _Sent.resent(pending)
                request.headers[PAYMENT_SIGNATURE_HEADER] = pending.header
                response = yield request
                outcome = self._account(response, request, resent)
                if outcome is _Outcome.SPENT:
                    spent = resent
                    continue
                if outcome is _Outcome.REFUSED:
                    continue
                return
            if spent is not None:
                # What we paid is spent, and the server will not let us claim it: hand the
                # 402 back rather than pay for the same article twice.
                self._give_up(request, spent)
                return
            # Raises when over policy: nothing is signed.
            offer = self.spending.choose(challenge.accepts, schemes=list(self.schemes))
            if self._decide is not None and not self._decide(response, challenge, offer):
                return
            self.spending.reserve(offer)
            try:
                payment = self.sign(offer, challenge)
                header = encode_header(payment)
                # Written down before it is sent: if the answer is lost, the next read resends it.
                self.receipts.add_pending(request.url, payer, header, offer)
            except BaseException:
                self.spending.release(offer)  # nothing left this process: nothing to count
                raise
            with self._lock:
                self._reserved.add(header)
            pending = PendingPayment(str(request.url), payer, header, offer, self._clock())
            request.headers[PAYMENT_SIGNATURE_HEADER] = header
            paid = yield request
            self._account(paid, request, _Sent(pending, payment))
            return

    def sign(self, offer: PaymentRequirements, challenge: PaymentRequired) -> PaymentPayload:
        """Build and sign the `PAYMENT-SIGNATURE` payload for `offer` (no policy check), echoing
        the extensions the 402 declared, as x402 v2 asks (a scheme's own entries added)."""
        payment = self.schemes[offer.scheme].sign(offer, challenge)
        if not challenge.extensions:
            return payment
        extensions = {**challenge.extensions, **(payment.extensions or {})}
        return payment.model_copy(update={"extensions": extensions})

    def _account(self, paid: httpx.Response, request: httpx.Request, sent: _Sent) -> _Outcome:
        """Settle the budget, the scheme and the pending record from the server's answer."""
        pending, scheme = sent.pending, self.schemes[sent.pending.offer.scheme]
        offer, header = pending.offer, pending.header
        response_header = paid.headers.get(PAYMENT_RESPONSE_HEADER)
        if paid.status_code < 400 and response_header is not None:
            try:
                settlement = decode_header(response_header, SettleResponse)
            except MalformedPaymentError:
                return _Outcome.UNKNOWN  # unreadable: keep reservation and pending
            if not settlement.success:
                return _Outcome.UNKNOWN
            scheme.settled(sent.payment, settlement)
            # What entitles us to re-read is written before the pending header is dropped: a
            # crash in between resends the header (served again, uncharged), never pays twice.
            receipt = paid_receipt(request.url, self.signer.address, offer, settlement)
            if receipt is not None:
                self.receipts.add(request.url, receipt)
            else:  # a voucher read: re-read by key proof all the same
                self.receipts.add_purchase(request.url, pending.payer, offer.scheme)
            self._confirm(request, pending, settlement, receipt)
            return _Outcome.PAID
        if paid.status_code in (400, 402, 404):
            reason = error_reason(paid)
            if reason == Reason.NONCE_ALREADY_USED:
                # Our own authorization, already used: the money moved (its answer was lost
                # after delivery, or it was settled elsewhere). Keep it for the claim.
                return _Outcome.SPENT
            # Refused before or at settlement: the protocol guarantees no charge.
            if self._unreserve(header):
                self.spending.release(offer)
            scheme.refused(sent.payment, reason)
            self.receipts.resolve_pending(request.url, pending.payer, header)
            return _Outcome.REFUSED
        # Anything else (5xx, a 2xx without receipt): outcome unknown, keep the reservation
        # and the pending header, which the next read of this URL sends again.
        return _Outcome.UNKNOWN

    def _unreserve(self, header: str) -> bool:
        """Whether this process reserved `header`'s amount; it no longer holds it."""
        with self._lock:
            reserved = header in self._reserved
            self._reserved.discard(header)
        return reserved

    def _confirm(
        self,
        request: httpx.Request,
        pending: PendingPayment,
        settlement: SettleResponse,
        receipt: SignedReceipt | None,
    ) -> None:
        """`pending` is paid: commit its amount, drop the pending header, record it."""
        self.spending.commit(pending.offer, reserved=self._unreserve(pending.header))
        self.receipts.resolve_pending(request.url, pending.payer, pending.header)
        record = PaymentRecord(
            str(request.url), pending.offer, settlement, pending.created_at, self._clock(), receipt
        )
        with self._lock:
            self.payments.append(record)
        if self._on_payment is not None:
            self._on_payment(record)

    def _recover(self, response: httpx.Response, request: httpx.Request, spent: _Sent) -> None:
        """The answer to a claim of `spent` (our payment, already used) with a key proof: the
        paid page (the payment is accounted as usual), or a re-read with the purchase's
        receipt (accounted from it); anything else, the money is gone all the same."""
        pending = spent.pending
        if PAYMENT_RESPONSE_HEADER in response.headers:
            if self._account(response, request, spent) is _Outcome.PAID:
                return
        elif response.status_code < 400:
            self._keep_reread_receipt(request, response)
            stored = self.receipts.find(request.url, pending.payer)
            receipt = stored.receipt if stored is not None else None
            if receipt is not None and receipt.amount == pending.offer.amount:
                settlement = SettleResponse(
                    success=True,
                    payer=pending.payer,
                    transaction=receipt.transaction,
                    network=receipt.network,
                    amount=receipt.amount,
                )
                self._confirm(request, pending, settlement, receipt)
                return
        self._give_up(request, spent)

    def _give_up(self, request: httpx.Request, spent: _Sent) -> None:
        """`spent` is used and could not be claimed: count it as spent, stop resending it."""
        pending = spent.pending
        self.spending.commit(pending.offer, reserved=self._unreserve(pending.header))
        self.receipts.resolve_pending(request.url, pending.payer, pending.header)
        log.warning("%s: our payment was used, and the server would not serve it", request.url)

    def _keep_reread_receipt(self, request: httpx.Request, response: httpx.Response) -> None:
        """Store the receipt a re-read answered with when none is kept for this URL: a read
        paid by voucher has its signed receipt only from then on."""
        payer = self.signer.address
        if self.receipts.find(request.url, payer) is not None:
            return
        receipt = reread_receipt(request.url, payer, response)
        if receipt is not None:
            self.receipts.add(request.url, receipt)


def _asks_for_payment(response: httpx.Response) -> bool:
    return response.status_code == 402 and PAYMENT_REQUIRED_HEADER in response.headers


def _resume(
    flow: Generator[httpx.Request, httpx.Response, None], response: httpx.Response
) -> httpx.Request | None:
    """Send `response` into `flow`: the next request it makes, or None once it is done."""
    try:
        return flow.send(response)
    except StopIteration:
        return None
