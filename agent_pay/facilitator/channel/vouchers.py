"""The fast path: a read paid by a voucher on a channel the payee knows.

Pure CPU: parse, one signature recovery (`VoucherChecker`), the acceptance rule under the
channel's lock (`ChannelAccount.accept`, which also notes the read the voucher paid for: the
payer's entitlement to read it again), mark the channel dirty for the write-behind store. No
chain read, no thread hop, no transaction. `accept` answers None when the payment needs the
chain first (a new channel's deposit, a top-up, a channel not seen yet): the handler's
`verify` / `settle` take it then.
"""

from __future__ import annotations

from collections.abc import Callable

from agent_pay.chain.channel import ChannelState
from agent_pay.errors import Reason
from agent_pay.facilitator.channel.accounts import ChannelAccounts
from agent_pay.facilitator.channel.book import ChannelAccount
from agent_pay.facilitator.channel.records import (
    Acceptance,
    ChannelBusyError,
    ChannelRefusedError,
)
from agent_pay.protocol import PaymentPayload, PaymentRequirements
from agent_pay.protocol.channel import ParsedPayload, parse_channel_payload
from agent_pay.signing.voucher_check import VoucherChecker

__all__ = ["VoucherAcceptor", "unknown_channel"]


class VoucherAcceptor:
    """Accepts and releases vouchers on `accounts`.

    Args:
        accounts: the payee's channel accounts.
        checker: recovers voucher signers under the channel contract's domain.
        clock: wall time, for the replay window.
        replay_window: seconds during which the same voucher for the same resource is served
            again, uncharged (the payer retrying a read whose answer it lost).
        on_accepted: called after each voucher accepted (the settler counts them).
    """

    def __init__(
        self,
        accounts: ChannelAccounts,
        checker: VoucherChecker,
        *,
        clock: Callable[[], float],
        replay_window: float,
        on_accepted: Callable[[], None],
    ) -> None:
        self.accounts = accounts
        self.checker = checker
        self.replay_window = replay_window
        self._clock = clock
        self._on_accepted = on_accepted
        self._contract = accounts.manager.address

    def accept(
        self,
        payment: PaymentPayload,
        requirements: PaymentRequirements,
        resource: str,
        *,
        parsed: ParsedPayload | None = None,
        url: str | None = None,
    ) -> Acceptance | None:
        """Pay one read of `resource` (a URL path; `url` as sold, for a re-read's receipt) with
        the voucher in `payment`, which accepted `requirements` (an offer this server made).

        `parsed` is `payment`'s payload if the caller parsed it already. Returns None when the
        payment needs the chain first. Raises ChannelRefusedError (402, with the channel's
        statement when the voucher is the payer's) or MalformedPaymentError.
        """
        payload = parsed if parsed is not None else parse_channel_payload(payment.payload)
        if payload.top_up is not None:
            return None
        account = self.accounts.get(bytes.fromhex(payload.channel_id[2:]))
        if account is None:
            return None
        # An `open` for a channel that is open already is ignored: a client attaches it to
        # every read until it hears that the channel is open.
        try:
            return self.accept_on(account, payload, requirements, resource, url)
        except ChannelBusyError:  # its lease ran out just now: the slow path renews it
            return None

    def accept_on(
        self,
        account: ChannelAccount,
        payload: ParsedPayload,
        requirements: PaymentRequirements,
        resource: str,
        url: str | None = None,
    ) -> Acceptance:
        """`accept` on `account`, the channel `payload` names."""
        self.check_terms(account, requirements)
        signature = bytes.fromhex(payload.signature[2:])
        self.check_signer(account, payload.cumulative_amount, signature)
        acceptance = account.accept(
            payload.cumulative_amount,
            requirements.amount,
            signature,
            resource=resource,
            now=self._clock(),
            replay_window=self.replay_window,
            url=url,
        )
        if not acceptance.replayed:
            self.accounts.store.mark(account)
            self._on_accepted()
        return acceptance

    def release(self, acceptance: Acceptance) -> None:
        """Undo `acceptance`: its read could not be served (the content failed). The voucher
        stays valid for the same read: its slice becomes unpaid again."""
        if acceptance.replayed:
            return
        account = self.accounts.get(acceptance.channel_id)
        if account is not None:
            account.release(acceptance.cumulative_amount, acceptance.price)
            self.accounts.store.mark(account)

    def vet(
        self, payload: ParsedPayload, requirements: PaymentRequirements, state: ChannelState
    ) -> None:
        """ChannelRefusedError unless `payload`'s voucher, on the channel as the chain has it
        (`state`), pays this offer's payee and asset and is signed by the channel's payer or
        signer: what must hold before the channel is taken from another instance."""
        account = ChannelAccount.from_chain(bytes.fromhex(payload.channel_id[2:]), state)
        self.check_terms(account, requirements)
        self.check_signer(account, payload.cumulative_amount, bytes.fromhex(payload.signature[2:]))

    def check_terms(self, account: ChannelAccount, requirements: PaymentRequirements) -> None:
        """ChannelRefusedError unless `account` pays the payee and asset `requirements` ask."""
        if account.payee != requirements.pay_to:
            raise ChannelRefusedError(
                f"this channel pays {account.payee}, not {requirements.pay_to}: open a channel "
                "to this payee",
                Reason.CHANNEL_PAYEE_MISMATCH,
            )
        if account.token != requirements.asset:
            raise ChannelRefusedError(
                f"this channel holds {account.token}, not {requirements.asset}",
                Reason.CHANNEL_ASSET_MISMATCH,
            )

    def check_signer(self, account: ChannelAccount, cumulative: int, signature: bytes) -> None:
        """ChannelRefusedError unless the voucher is signed by the channel's payer or signer."""
        try:
            signer = self.checker.signer_of(
                account.channel_id, cumulative, signature, account.signers
            )
        except ValueError as exc:
            raise ChannelRefusedError(
                f"malformed voucher signature: {exc}", Reason.CHANNEL_INVALID_SIGNATURE
            ) from None
        if signer is None:
            raise ChannelRefusedError(
                "the voucher is not signed by the channel's payer or signer (another key, or "
                f"signed for another chain or channel contract than {self._contract})",
                Reason.CHANNEL_INVALID_SIGNATURE,
            )


def unknown_channel(channel: bytes, manager: str) -> ChannelRefusedError:
    """The refusal of a voucher on a channel that does not exist."""
    return ChannelRefusedError(
        f"no channel 0x{channel.hex()} on {manager}: open one first", Reason.CHANNEL_UNKNOWN
    )
