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
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

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
from agent_pay.protocol.extensions import (
    ENTITLEMENT_HEADER,
    NO_TRANSACTION,
    RECEIPT_HEADER,
    EntitlementChallenge,
    EntitlementProof,
    SignedReceipt,
    challenge_info,
    receipt_info,
)
from agent_pay.signing import Signer, random_nonce
from agent_pay.signing.receipt import recover_receipt_signer, sign_read_proof

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
        self._reserved: set[str] = set()  # headers whose amount this process reserved
        self.payments: list[PaymentRecord] = []
        self.rereads: list[str] = []  # URLs read again by key proof, without paying

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        response = yield request
        payer = self.signer.address
        tried_proof = tried_pending = False
        spent: PendingPayment | None = None  # our payment the server says is already used
        while response.status_code == 402 and PAYMENT_REQUIRED_HEADER in response.headers:
            challenge = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
            offer_to_prove = _entitlement_challenge(challenge)
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
                    request.headers[PAYMENT_SIGNATURE_HEADER] = spent.header
                request.headers[ENTITLEMENT_HEADER] = self._prove(request, offer_to_prove)
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
                request.headers[PAYMENT_SIGNATURE_HEADER] = pending.header
                response = yield request
                outcome, _ = self._account(response, request, pending)
                if outcome is _Outcome.SPENT:
                    spent = pending
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
                header = encode_header(self.sign(offer, challenge))
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
            self._account(paid, request, pending)
            return

    def sign(self, offer: PaymentRequirements, challenge: PaymentRequired) -> PaymentPayload:
        """Build and sign the `PAYMENT-SIGNATURE` payload for `offer` (no policy check), echoing
        the extensions the 402 declared, as x402 v2 asks (a scheme's own entries added)."""
        payment = self.schemes[offer.scheme].sign(offer, challenge)
        if not challenge.extensions:
            return payment
        extensions = {**challenge.extensions, **(payment.extensions or {})}
        return payment.model_copy(update={"extensions": extensions})

    def _prove(self, request: httpx.Request, challenge: EntitlementChallenge) -> str:
        """The `AGENT-PAY-ENTITLEMENT` header answering `challenge` for this URL."""
        path = request.url.path
        nonce = bytes.fromhex(challenge.challenge[2:])
        signature = sign_read_proof(
            self.signer, path, nonce, challenge.expires_at, challenge.signer
        )
        stored = self.receipts.find(request.url, self.signer.address)
        proof = EntitlementProof(
            payer=self.signer.address,
            resource=path,
            challenge=challenge.challenge,
            expires_at=challenge.expires_at,
            signature="0x" + signature.hex(),
            receipt=stored.receipt if stored is not None else None,
        )
        return encode_header(proof)

    def _account(
        self, paid: httpx.Response, request: httpx.Request, pending: PendingPayment
    ) -> tuple[_Outcome, str | None]:
        """Settle the budget and the pending record from the server's answer."""
        offer, header = pending.offer, pending.header
        with self._lock:
            reserved = header in self._reserved
        response_header = paid.headers.get(PAYMENT_RESPONSE_HEADER)
        if paid.status_code < 400 and response_header is not None:
            try:
                settlement = decode_header(response_header, SettleResponse)
            except MalformedPaymentError:
                return _Outcome.UNKNOWN, None  # unreadable: keep reservation and pending
            if not settlement.success:
                return _Outcome.UNKNOWN, None
            self.schemes[offer.scheme].settled(offer, settlement)
            # What entitles us to re-read is written before the pending header is dropped: a
            # crash in between resends the header (served again, uncharged), never pays twice.
            receipt = self._keep_receipt(request, offer, settlement)
            if receipt is None:  # a voucher read: re-read by key proof all the same
                self.receipts.add_purchase(request.url, pending.payer, offer.scheme)
            self._confirm(request, pending, settlement, receipt)
            return _Outcome.PAID, None
        if paid.status_code in (400, 402, 404):
            reason = _error_reason(paid)
            if reason == Reason.NONCE_ALREADY_USED:
                # Our own authorization, already used: the money moved (its answer was lost
                # after delivery, or it was settled elsewhere). Keep it for the claim.
                return _Outcome.SPENT, reason
            # Refused before or at settlement: the protocol guarantees no charge.
            if reserved:
                self.spending.release(offer)
            self.schemes[offer.scheme].refused(offer, reason)
            self.receipts.resolve_pending(request.url, pending.payer, header)
            with self._lock:
                self._reserved.discard(header)
            return _Outcome.REFUSED, reason
        # Anything else (5xx, a 2xx without receipt): outcome unknown, keep the reservation
        # and the pending header, which the next read of this URL sends again.
        return _Outcome.UNKNOWN, None

    def _confirm(
        self,
        request: httpx.Request,
        pending: PendingPayment,
        settlement: SettleResponse,
        receipt: SignedReceipt | None,
    ) -> None:
        """`pending` is paid: commit its amount, drop the pending header, record it."""
        with self._lock:
            reserved = pending.header in self._reserved
            self._reserved.discard(pending.header)
        self.spending.commit(pending.offer, reserved=reserved)
        self.receipts.resolve_pending(request.url, pending.payer, pending.header)
        record = PaymentRecord(
            str(request.url), pending.offer, settlement, pending.created_at, self._clock(), receipt
        )
        with self._lock:
            self.payments.append(record)
        if self._on_payment is not None:
            self._on_payment(record)

    def _recover(
        self, response: httpx.Response, request: httpx.Request, spent: PendingPayment
    ) -> None:
        """The answer to a claim of `spent` (our payment, already used) with a key proof: the
        paid page (the payment is accounted as usual), or a re-read with the purchase's
        receipt (accounted from it); anything else, the money is gone all the same."""
        if PAYMENT_RESPONSE_HEADER in response.headers:
            if self._account(response, request, spent)[0] is _Outcome.PAID:
                return
        elif response.status_code < 400:
            self._keep_reread_receipt(request, response)
            stored = self.receipts.find(request.url, spent.payer)
            receipt = stored.receipt if stored is not None else None
            if receipt is not None and receipt.amount == spent.offer.amount:
                settlement = SettleResponse(
                    success=True,
                    payer=spent.payer,
                    transaction=receipt.transaction,
                    network=receipt.network,
                    amount=receipt.amount,
                )
                self._confirm(request, spent, settlement, receipt)
                return
        self._give_up(request, spent)

    def _give_up(self, request: httpx.Request, spent: PendingPayment) -> None:
        """`spent` is used and could not be claimed: count it as spent, stop resending it."""
        with self._lock:
            reserved = spent.header in self._reserved
            self._reserved.discard(spent.header)
        self.spending.commit(spent.offer, reserved=reserved)
        self.receipts.resolve_pending(request.url, spent.payer, spent.header)
        log.warning("%s: our payment was used, and the server would not serve it", request.url)

    def _keep_receipt(
        self, request: httpx.Request, offer: PaymentRequirements, settlement: SettleResponse
    ) -> SignedReceipt | None:
        """The receipt in `settlement`, stored if it checks out; None if absent or wrong."""
        raw = receipt_info(settlement.extensions)
        if raw is None:
            return None
        try:
            receipt = SignedReceipt.from_wire(raw)
            signer = recover_receipt_signer(receipt)
        except (ValidationError, ValueError):
            log.warning("ignoring an unreadable receipt from %s", request.url)
            return None
        expected = (
            self.signer.address,
            settlement.transaction or NO_TRANSACTION,  # a voucher read settles none
            offer.amount,
            offer.asset,
            offer.pay_to,
            request.url.path,
        )
        found = (
            receipt.payer,
            receipt.transaction,
            receipt.amount,
            receipt.asset,
            receipt.pay_to,
            urlsplit(receipt.resource).path,
        )
        if signer != receipt.signer or found != expected:
            log.warning("ignoring a receipt from %s that does not match the payment", request.url)
            return None
        self.receipts.add(request.url, receipt)
        return receipt

    def _keep_reread_receipt(self, request: httpx.Request, response: httpx.Response) -> None:
        """Store the receipt a re-read answered with (`AGENT-PAY-RECEIPT`) when none is kept
        for this URL: a read paid by voucher has its signed receipt only from then on."""
        raw = response.headers.get(RECEIPT_HEADER)
        payer = self.signer.address
        if raw is None or self.receipts.find(request.url, payer) is not None:
            return
        try:
            receipt = decode_header(raw, SignedReceipt)
            signer = recover_receipt_signer(receipt)
        except (MalformedPaymentError, ValueError):
            log.warning("ignoring an unreadable receipt from %s", request.url)
            return
        found = (signer, receipt.payer, urlsplit(receipt.resource).path)
        if found != (receipt.signer, payer, request.url.path):
            log.warning("ignoring a receipt from %s that is not for this read", request.url)
            return
        self.receipts.add(request.url, receipt)


def _entitlement_challenge(required: PaymentRequired) -> EntitlementChallenge | None:
    raw = challenge_info(required.extensions)
    if raw is None:
        return None
    try:
        return EntitlementChallenge.from_wire(raw)
    except ValidationError:
        return None  # a server we cannot re-read from: pay as usual


def _error_reason(response: httpx.Response) -> str | None:
    header = response.headers.get(PAYMENT_REQUIRED_HEADER)
    if header is None:
        return None
    try:
        return decode_header(header, PaymentRequired).error
    except MalformedPaymentError:
        return None
