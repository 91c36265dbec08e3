"""The x402 "exact" scheme on EVM: verify an EIP-3009 authorization, then settle it on chain.

Verification runs the cheap checks first (fields, time window, one signature recovery:
`agent_pay.facilitator.exact_checks`) and the chain reads last (nonce state, balance).
Settlement submits `transferWithAuthorization` from the facilitator's own gas-paying key and
confirms the `Transfer` event before reporting success.

Settlement is idempotent. An EIP-3009 signature binds payer, payee, value and nonce, so an
authorization that is already used on chain can only have made this very transfer: settling it
again finds the `AuthorizationUsed(payer, nonce)` log, checks that the same transaction moved
`value` from payer to payee, and reports success with that transaction's hash instead of
refusing. A cancelled authorization (`AuthorizationCanceled`) has no such log and stays refused.
So a server that lost track of a settlement (it crashed, the node timed out) simply asks again,
and two requests settling the same authorization at once share one transaction.

This module is synchronous and blocking; `LocalFacilitator` runs it in worker threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from contextlib import AbstractContextManager, ExitStack, nullcontext

from eth_utils import keccak, to_canonical_address

from agent_pay.chain.base import ChainError, Receipt, TransactionRejectedError
from agent_pay.chain.contract import Transactor
from agent_pay.chain.rpc import NodeUnavailableError
from agent_pay.chain.stablecoin import TRANSFER_WITH_AUTHORIZATION_GAS, Stablecoin
from agent_pay.errors import (
    ChainUnavailableError,
    PaymentRejectedError,
    Reason,
    SettlementFailedError,
)
from agent_pay.facilitator.base import Settlement
from agent_pay.facilitator.exact_checks import (
    SCHEME,
    VALIDITY_MARGIN,
    CheckedPayment,
    check_payment,
    check_window,
)
from agent_pay.protocol import X402_VERSION, PaymentPayload, PaymentRequirements, SupportedKind
from agent_pay.protocol.networks import caip2
from agent_pay.signing import TransferAuthorization

__all__ = [
    "AUTHORIZATION_USED_TOPIC",
    "SCHEME",
    "VALIDITY_MARGIN",
    "ExactEvmScheme",
    "SubmittedHook",
]

log = logging.getLogger(__name__)

AUTHORIZATION_USED_TOPIC = keccak(text="AuthorizationUsed(address,bytes32)")
"""topic0 of EIP-3009's `AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce)`."""

SubmittedHook = Callable[[str, bytes, str], None]
"""Called with (payer, nonce, transaction hash) just before a settlement is broadcast (again,
with the new hash, if it has to be signed anew). If it raises, nothing is broadcast."""

_RESUBMISSIONS = 3
"""How often a settlement the node dropped is sent again within one `settle` call."""

_CHAIN_TROUBLE = (ChainError, OSError, TimeoutError)

# Revert strings of contracts/Stablecoin.vy and of the snekmate modules it composes,
# mapped to the reason a client can act on.
_REVERT_REASONS = {
    "authorization is expired": Reason.VALID_BEFORE_EXPIRED,
    "authorization is not yet valid": Reason.VALID_AFTER_FUTURE,
    "authorization is used or canceled": Reason.NONCE_ALREADY_USED,
    "invalid signature": Reason.INVALID_SIGNATURE,
    "transfer amount exceeds balance": Reason.INSUFFICIENT_BALANCE,  # snekmate erc20
}


class ExactEvmScheme:
    """Verifies and settles "exact" payments in the given tokens on one chain.

    Args:
        tokens: the stablecoins this facilitator will settle (all on one chain).
        transactor: the facilitator's gas-paying account.
        receipt_timeout: seconds to wait for a settlement to be mined.
        clock: the time validity windows are checked against (the chain's next block by
            default).
        on_submitted: told each settlement transaction's hash as soon as it is sent (a server
            records it; fault-injection tests stop the process there). Its errors are logged.
        log_lookback_blocks: how far back to look for an earlier settlement of the same
            authorization (None: from genesis; set it for public nodes that cap log ranges).
    """

    def __init__(
        self,
        tokens: Iterable[Stablecoin],
        transactor: Transactor,
        *,
        receipt_timeout: float = 30.0,
        clock: Callable[[], int] | None = None,
        on_submitted: SubmittedHook | None = None,
        log_lookback_blocks: int | None = None,
    ) -> None:
        self.chain = transactor.chain
        self.network = caip2(self.chain.chain_id)
        self._tokens = {t.address: t for t in tokens}
        self._transactor = transactor
        self.receipt_timeout = receipt_timeout
        self._clock = clock or self.chain.next_timestamp
        self._on_submitted = on_submitted
        self._lookback = log_lookback_blocks
        self._in_flight: dict[tuple[str, bytes], Future[Settlement]] = {}
        self._lock = threading.Lock()

    scheme = SCHEME

    @property
    def tokens(self) -> list[Stablecoin]:
        return list(self._tokens.values())

    def supported_kind(self) -> SupportedKind:
        return SupportedKind(x402_version=X402_VERSION, scheme=SCHEME, network=self.network)

    @property
    def signer_address(self) -> str:
        return self._transactor.address

    # -- verify --------------------------------------------------------------------------------

    def verify(self, payment: PaymentPayload, requirements: PaymentRequirements) -> str:
        """Check everything that decides whether `payment` would settle now; return the payer.

        Raises PaymentRejectedError (or MalformedPaymentError for an unreadable payload)
        with the reason, ChainUnavailableError when the chain cannot be asked.
        """
        verified = self._check_payment(payment, requirements)
        self._check_window(verified.auth)
        self._check_chain_state(verified.token, verified.auth)
        return verified.auth.from_

    def _check_payment(
        self, payment: PaymentPayload, requirements: PaymentRequirements
    ) -> CheckedPayment:
        return check_payment(payment, requirements, self._tokens, self.network)

    def _check_window(self, auth: TransferAuthorization) -> None:
        check_window(auth, self._chain_now())

    def _check_chain_state(
        self, token: Stablecoin, auth: TransferAuthorization, *, unused: bool = False
    ) -> None:
        """Nonce unused (skipped when the caller just read it: `unused`), balance enough."""
        if not unused and self._is_used(token, auth):
            raise PaymentRejectedError(
                "this authorization was already used or cancelled", Reason.NONCE_ALREADY_USED
            )
        try:
            balance = token.balance_of(auth.from_)
        except _CHAIN_TROUBLE as exc:
            raise ChainUnavailableError(f"cannot read the chain: {exc}") from exc
        if balance < auth.value:
            raise PaymentRejectedError(
                f"payer holds {token.asset.format(balance)}, "
                f"needs {token.asset.format(auth.value)}",
                Reason.INSUFFICIENT_BALANCE,
            )

    def _is_used(self, token: Stablecoin, auth: TransferAuthorization) -> bool:
        try:
            return token.authorization_state(auth.from_, auth.nonce)
        except _CHAIN_TROUBLE as exc:
            raise ChainUnavailableError(f"cannot read the chain: {exc}") from exc

    def _chain_now(self) -> int:
        try:
            return self._clock()
        except _CHAIN_TROUBLE as exc:
            raise ChainUnavailableError(f"node unreachable: {exc}") from exc

    # -- settle --------------------------------------------------------------------------------

    def settle(self, payment: PaymentPayload, requirements: PaymentRequirements) -> Settlement:
        """Settle `payment`, exactly once however often it is asked.

        If the authorization is already used by a transfer of exactly this payment, returns
        that transfer (even after the authorization expired). Otherwise verifies again, submits,
        waits for it, and confirms the Transfer event. A call for an authorization that another
        thread is settling right now waits for that settlement and returns its outcome.

        Raises PaymentRejectedError (nothing submitted), SettlementFailedError (the transfer
        reverted: nothing was charged), ChainUnavailableError (node trouble: the outcome may be
        unknown; asking again is safe).
        """
        verified = self._check_payment(payment, requirements)
        key = (verified.auth.from_, verified.auth.nonce)
        with self._lock:
            flight = self._in_flight.get(key)
            owner = flight is None
            if flight is None:
                flight = self._in_flight[key] = Future()
        if not owner:
            try:
                return flight.result(timeout=self.receipt_timeout + 5)
            except TimeoutError as exc:
                raise ChainUnavailableError("the same settlement is still under way") from exc
        try:
            settlement = self._settle_once(verified)
        except BaseException as exc:
            flight.set_exception(exc)
            raise
        else:
            flight.set_result(settlement)
            return settlement
        finally:
            with self._lock:
                del self._in_flight[key]
            # Nobody may be waiting: retrieve the exception so it is not reported as lost.
            if flight.done() and not flight.cancelled():
                flight.exception()

    def _settle_once(self, verified: CheckedPayment) -> Settlement:
        token, auth = verified.token, verified.auth
        with ExitStack() as expected:
            # Tell a chain that mines by group commit a transaction is on its way, until it is
            # sent: a block mined meanwhile waits (briefly) for it instead of leaving it for
            # a block of its own.
            expected.enter_context(self._expecting())
            try:
                if self._is_used(token, auth):
                    expected.close()
                    earlier = self.find_settlement(token, auth)
                    if earlier is not None:
                        return earlier
                    raise PaymentRejectedError(
                        "this authorization was already used or cancelled",
                        Reason.NONCE_ALREADY_USED,
                    )
                self._check_window(auth)
                self._check_chain_state(token, auth, unused=True)
            except ChainUnavailableError as exc:
                exc.broadcast = False  # nothing of this call was sent yet
                raise
            return self._submit(verified, expected)

    def _expecting(self) -> AbstractContextManager[None]:
        expecting = getattr(self.chain, "expecting", None)
        return nullcontext() if expecting is None else expecting()

    def find_settlement(self, token: Stablecoin, auth: TransferAuthorization) -> Settlement | None:
        """The on-chain transfer that used `auth`, or None if none did (unused, cancelled, or
        used by a transaction that did not pay `auth.value` from payer to payee)."""
        topics = [AUTHORIZATION_USED_TOPIC, to_canonical_address(auth.from_).rjust(32, b"\0")]
        topics.append(auth.nonce)
        try:
            start = 0
            if self._lookback is not None:
                start = max(0, self.chain.block_number() - self._lookback)
            logs = self.chain.get_logs(token.address, topics, from_block=start)
            for entry in reversed(logs):
                receipt = self.chain.get_receipt(entry.transaction_hash)
                if receipt is not None and receipt.status and _pays(token, receipt, auth):
                    return _settlement(auth, receipt)
        except _CHAIN_TROUBLE as exc:
            raise ChainUnavailableError(f"cannot read the chain's logs: {exc}") from exc
        return None

    def _submit(self, verified: CheckedPayment, expected: ExitStack) -> Settlement:
        """Send the transfer and confirm it. A transaction the node dropped (replaced by another
        sender of our gas key, or evicted) is sent again while the authorization is unused."""
        token, auth = verified.token, verified.auth
        data = token.transfer_with_authorization_data(
            auth.from_,
            auth.to,
            auth.value,
            auth.valid_after,
            auth.valid_before,
            auth.nonce,
            verified.signature,
        )
        broadcast = False
        sent: list[str] = []  # every hash handed to the node (or about to be), in order

        def announce(tx_hash: bytes) -> None:
            self._announce(auth, tx_hash)
            sent.append("0x" + tx_hash.hex())

        def trouble(message: str, broadcast: bool | None) -> ChainUnavailableError:
            # Tell the caller (over HTTP too) what may still be mined: nothing if no hash was
            # ever announced (each is announced just before it is handed to the node), else
            # the last one sent.
            if not sent or broadcast is False:
                return ChainUnavailableError(message, broadcast=False)
            return ChainUnavailableError(message, broadcast=broadcast, transaction=sent[-1])

        for attempt in range(_RESUBMISSIONS + 1):
            try:
                tx_hash = self._transactor.send(
                    token.address,
                    data,
                    gas=TRANSFER_WITH_AUTHORIZATION_GAS,
                    before_broadcast=announce,
                )
            except TransactionRejectedError as exc:
                raise trouble(f"the node refused the settlement: {exc}", broadcast) from exc
            except NodeUnavailableError as exc:
                # Unreachable before the request was written, or no answer after: unknown.
                maybe = None if exc.maybe_sent else broadcast
                raise trouble(f"settlement not sent: {exc}", maybe) from exc
            except _CHAIN_TROUBLE as exc:
                raise trouble(f"settlement not sent: {exc}", None) from exc
            broadcast = True
            expected.close()  # sent: the block may go without us now
            try:
                receipt = self.chain.wait_for_receipt(tx_hash, self.receipt_timeout)
            except TransactionRejectedError as exc:
                if attempt < _RESUBMISSIONS and not self._is_used(token, auth):
                    log.warning("settlement %s was dropped (%s); sending again", tx_hash.hex(), exc)
                    continue
                raise trouble(f"settlement dropped by the node: {exc}", True) from exc
            except _CHAIN_TROUBLE as exc:
                raise trouble(f"settlement not confirmed: {exc}", True) from exc
            break
        if not receipt.status:
            reason = _revert_reason(receipt.revert_reason)
            if reason is Reason.NONCE_ALREADY_USED:
                # Someone (a front-runner, or our own earlier attempt) used it first in the same
                # block: if that was this very transfer, the payment is made.
                earlier = self.find_settlement(token, auth)
                if earlier is not None:
                    return earlier
            raise SettlementFailedError(f"transfer reverted: {receipt.revert_reason}", reason)
        if not _pays(token, receipt, auth):
            raise SettlementFailedError("no matching Transfer event in the receipt")
        return _settlement(auth, receipt)

    def _announce(self, auth: TransferAuthorization, tx_hash: bytes) -> None:
        """Tell `on_submitted` a settlement's hash before it is broadcast. If the hook fails,
        the transaction is not sent: whoever listens must know of everything that may settle."""
        if self._on_submitted is None:
            return
        try:
            self._on_submitted(auth.from_, auth.nonce, "0x" + tx_hash.hex())
        except Exception as exc:
            log.exception("on_submitted hook failed: the settlement is not sent")
            raise ChainUnavailableError(
                f"settlement not sent: it could not be recorded ({type(exc).__name__})",
                broadcast=False,
            ) from exc


def _pays(token: Stablecoin, receipt: Receipt, auth: TransferAuthorization) -> bool:
    return any(
        (t["sender"], t["receiver"], t["value"]) == (auth.from_, auth.to, auth.value)
        for t in token.transfers(receipt)
    )


def _settlement(auth: TransferAuthorization, receipt: Receipt) -> Settlement:
    return Settlement(
        payer=auth.from_,
        transaction=receipt.tx_hash_hex,
        amount=auth.value,
        gas_used=receipt.gas_used,
        block_number=receipt.block_number,
    )


def _revert_reason(message: str | None) -> Reason:
    text = (message or "").lower()
    for fragment, reason in _REVERT_REASONS.items():
        if fragment in text:
            return reason
    return Reason.TRANSACTION_FAILED
