"""The x402 "exact" scheme on EVM: verify an EIP-3009 authorization, then settle it on chain.

Verification runs the cheap checks first (fields, time window, one signature recovery) and the
chain reads last (nonce state, balance). Settlement submits `transferWithAuthorization` from the
facilitator's own gas-paying key and confirms the `Transfer` event before reporting success.

This module is synchronous and blocking; `LocalFacilitator` runs it in worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agent_pay.chain.base import ChainError, TransactionRejectedError
from agent_pay.chain.contract import Transactor
from agent_pay.chain.stablecoin import TRANSFER_WITH_AUTHORIZATION_GAS, Stablecoin
from agent_pay.errors import (
    ChainUnavailableError,
    PaymentRejectedError,
    Reason,
    SettlementFailedError,
)
from agent_pay.facilitator.base import Settlement
from agent_pay.protocol import X402_VERSION, PaymentPayload, PaymentRequirements, SupportedKind
from agent_pay.protocol.matching import match_offer
from agent_pay.protocol.networks import caip2
from agent_pay.signing import TokenDomain, TransferAuthorization, recover_transfer_authorizer

__all__ = ["SCHEME", "ExactEvmScheme"]

SCHEME = "exact"
VALIDITY_MARGIN = 6
"""Seconds an authorization must still be valid for when verified: settlement needs a block."""

# Revert strings of contracts/Stablecoin.vy and of the snekmate modules it composes,
# mapped to the reason a client can act on.
_REVERT_REASONS = {
    "authorization is expired": Reason.VALID_BEFORE_EXPIRED,
    "authorization is not yet valid": Reason.VALID_AFTER_FUTURE,
    "authorization is used or canceled": Reason.NONCE_ALREADY_USED,
    "invalid signature": Reason.INVALID_SIGNATURE,
    "transfer amount exceeds balance": Reason.INSUFFICIENT_BALANCE,  # snekmate erc20
}


@dataclass(frozen=True, slots=True)
class _Verified:
    token: Stablecoin
    auth: TransferAuthorization
    signature: bytes


class ExactEvmScheme:
    """Verifies and settles "exact" payments in the given tokens on one chain.

    Args:
        tokens: the stablecoins this facilitator will settle (all on one chain).
        transactor: the facilitator's gas-paying account.
        receipt_timeout: seconds to wait for a settlement to be mined.
    """

    def __init__(
        self,
        tokens: Iterable[Stablecoin],
        transactor: Transactor,
        *,
        receipt_timeout: float = 30.0,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.chain = transactor.chain
        self.network = caip2(self.chain.chain_id)
        self._tokens = {t.address: t for t in tokens}
        self._transactor = transactor
        self._receipt_timeout = receipt_timeout
        self._clock = clock or self.chain.next_timestamp
        self._in_flight: set[tuple[str, bytes]] = set()
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
        return self._verify(payment, requirements).auth.from_

    def _verify(self, payment: PaymentPayload, requirements: PaymentRequirements) -> _Verified:
        if requirements.scheme != SCHEME:
            raise PaymentRejectedError(
                f"this facilitator settles scheme {SCHEME!r} only", Reason.UNSUPPORTED_SCHEME
            )
        if requirements.network != self.network:
            raise PaymentRejectedError(
                f"this facilitator settles on {self.network} only", Reason.NETWORK_MISMATCH
            )
        match_offer(payment.accepted, [requirements])
        token = self._tokens.get(requirements.asset)
        if token is None:
            raise PaymentRejectedError(
                f"asset {requirements.asset} is not settled here", Reason.ASSET_MISMATCH
            )
        domain = _domain(token)
        if requirements.extra.get("name") != domain.name or (
            requirements.extra.get("version") != domain.version
        ):
            raise PaymentRejectedError(
                "extra.name/extra.version do not match the token's EIP-712 domain",
                Reason.REQUIREMENTS_MISMATCH,
            )
        exact = payment.exact_evm()
        auth = TransferAuthorization.from_wire(exact.authorization)
        if auth.to != requirements.pay_to:
            raise PaymentRejectedError(
                f"authorization pays {auth.to}, not {requirements.pay_to}",
                Reason.RECIPIENT_MISMATCH,
            )
        if auth.value != requirements.amount:
            raise PaymentRejectedError(
                f"authorization value {auth.value} is not the price {requirements.amount}",
                Reason.AMOUNT_MISMATCH,
            )
        now = self._chain_now()
        if auth.valid_after >= now:
            raise PaymentRejectedError(
                f"authorization is not valid before {auth.valid_after} (now {now})",
                Reason.VALID_AFTER_FUTURE,
            )
        if auth.valid_before <= now + VALIDITY_MARGIN:
            raise PaymentRejectedError(
                f"authorization expires at {auth.valid_before}, too soon to settle (now {now})",
                Reason.VALID_BEFORE_EXPIRED,
            )
        signature = bytes.fromhex(exact.signature[2:])
        try:
            signer = recover_transfer_authorizer(domain, auth, signature)
        except ValueError as exc:
            raise PaymentRejectedError(f"bad signature: {exc}", Reason.INVALID_SIGNATURE) from None
        if signer != auth.from_:
            raise PaymentRejectedError(
                "signature is not from the payer (signed by another key, or over other fields)",
                Reason.INVALID_SIGNATURE,
            )
        self._check_chain_state(token, auth)
        return _Verified(token, auth, signature)

    def _check_chain_state(self, token: Stablecoin, auth: TransferAuthorization) -> None:
        try:
            used = token.authorization_state(auth.from_, auth.nonce)
            balance = token.balance_of(auth.from_)
        except ChainError as exc:
            raise ChainUnavailableError(f"cannot read the chain: {exc}") from exc
        except OSError as exc:
            raise ChainUnavailableError(f"node unreachable: {exc}") from exc
        if used:
            raise PaymentRejectedError(
                "this authorization was already used or cancelled", Reason.NONCE_ALREADY_USED
            )
        if balance < auth.value:
            raise PaymentRejectedError(
                f"payer holds {token.asset.format(balance)}, "
                f"needs {token.asset.format(auth.value)}",
                Reason.INSUFFICIENT_BALANCE,
            )

    def _chain_now(self) -> int:
        try:
            return self._clock()
        except (ChainError, OSError) as exc:
            raise ChainUnavailableError(f"node unreachable: {exc}") from exc

    # -- settle --------------------------------------------------------------------------------

    def settle(self, payment: PaymentPayload, requirements: PaymentRequirements) -> Settlement:
        """Verify again, submit the transfer, wait for it, confirm the Transfer event.

        Raises PaymentRejectedError (nothing submitted), SettlementFailedError (the transfer
        reverted: nothing was charged), ChainUnavailableError (node trouble).
        """
        verified = self._verify(payment, requirements)
        key = (verified.auth.from_, verified.auth.nonce)
        with self._lock:
            if key in self._in_flight:
                raise PaymentRejectedError(
                    "this authorization is already being settled", Reason.NONCE_ALREADY_USED
                )
            self._in_flight.add(key)
        try:
            return self._submit(verified)
        finally:
            with self._lock:
                self._in_flight.discard(key)

    def _submit(self, verified: _Verified) -> Settlement:
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
        try:
            tx_hash = self._transactor.send(
                token.address, data, gas=TRANSFER_WITH_AUTHORIZATION_GAS
            )
            receipt = self.chain.wait_for_receipt(tx_hash, self._receipt_timeout)
        except TransactionRejectedError as exc:
            raise ChainUnavailableError(f"the node refused the settlement: {exc}") from exc
        except (ChainError, OSError, TimeoutError) as exc:
            raise ChainUnavailableError(f"settlement not confirmed: {exc}") from exc
        if not receipt.status:
            raise SettlementFailedError(
                f"transfer reverted: {receipt.revert_reason}", _revert_reason(receipt.revert_reason)
            )
        moved = [
            t
            for t in token.transfers(receipt)
            if (t["sender"], t["receiver"], t["value"]) == (auth.from_, auth.to, auth.value)
        ]
        if not moved:
            raise SettlementFailedError("no matching Transfer event in the receipt")
        return Settlement(
            payer=auth.from_,
            transaction=receipt.tx_hash_hex,
            amount=auth.value,
            gas_used=receipt.gas_used,
            block_number=receipt.block_number,
        )


def _domain(token: Stablecoin) -> TokenDomain:
    asset = token.asset
    return TokenDomain(asset.eip712_name, asset.eip712_version, asset.chain_id, asset.address)


def _revert_reason(message: str | None) -> Reason:
    text = (message or "").lower()
    for fragment, reason in _REVERT_REASONS.items():
        if fragment in text:
            return reason
    return Reason.TRANSACTION_FAILED
