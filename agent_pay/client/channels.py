"""Paying by channel: deposit once with a payee, then one signed voucher per read.

    channels = ChannelClientScheme(signer, policy, ClientChannelStore(data_dir / "channels"))
    auth = channels.payment_auth()            # PaymentAuth: channel first, "exact" otherwise
    with httpx.Client(auth=auth) as http:
        http.get(url)                          # 1st read from this payee: deposit + voucher
        http.get(other_url_same_payee)         # later reads: a voucher each, no transaction

**When a channel is opened** (`ChannelPolicy`): only when the agent expects several reads
from that payee — at least `min_expected_reads`, from `expect(payee, reads)` or, by default,
once it has already paid that payee `min_expected_reads - 1` times — and a deposit of
`deposit_reads` reads (clipped to what the budget has left, never below the offer's
`minDeposit`), or the policy's fixed deposit for that token, fits the budget. Otherwise the
read is paid "exact".

**Budget accounting** (`ChannelSpending`, the policy's `Spending` for channel clients): a
deposit leaves the wallet when the channel opens, so from then on the part of it not yet spent
on confirmed reads is *locked*: it counts against the budget as reserved until it is refunded
by a close. A read on the channel moves its price from locked to spent (no new budget needed),
so `spent + reserved + locked` is what the agent has parted with or may still lose.

**Vouchers.** Each read signs a new cumulative total `C` and pays with the slice
(C - price, C]. Totals are allocated under a lock, so concurrent reads on one channel get
distinct slices; the highest total ever signed is written to disk before the voucher leaves
(`ClientChannelStore`). A slice that was refused, or that the server reports unpaid (a request
lost on the way), is reused by a later read, so the agent never pays twice for a read it had.
After a restart, `resume(http)` refreshes each channel from the server's `GET /channels/{id}`
and the agent continues from the server's last accepted voucher.

**Top-ups.** A channel whose deposit is used up is topped up, not replaced: the next read signs
a top-up of the size a new deposit would have (the same policy and budget rules) and sends it
with its voucher, and with every voucher after it until the server shows it went in. A top-up
refused (the payer's balance, say) is taken back out of the deposit and not tried again on that
channel.

**Who decides.** `ChannelSpending` makes every decision above (whether to pay by channel, which
channel, how large a deposit or top-up) from the agent's channel store; this scheme asks it and
signs what it decided. The dependency runs one way: the scheme knows the policy, the policy
knows only the store.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import httpx
from pydantic import ValidationError

from agent_pay.client.auth import PaymentAuth
from agent_pay.client.channel_answers import VoucherTicket, adopt, refuse, settle
from agent_pay.client.channel_policy import ChannelPolicy, ChannelSpending
from agent_pay.client.channel_store import ChannelRecord, ClientChannelStore
from agent_pay.client.deposit_signing import signed_open, signed_top_up
from agent_pay.client.policy import SpendingPolicy
from agent_pay.client.schemes import ClientScheme, ExactClientScheme
from agent_pay.protocol import (
    X402_VERSION,
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    SettleResponse,
)
from agent_pay.protocol.channel import (
    CHANNEL_EXTENSION,
    CHANNEL_SCHEME,
    ChannelOfferExtra,
    ChannelPayload,
    ChannelStatement,
)
from agent_pay.protocol.declaration import info_of
from agent_pay.protocol.networks import parse_caip2
from agent_pay.signing import (
    Signer,
    random_nonce,
)
from agent_pay.signing.voucher import (
    Voucher,
    channel_id,
    sign_voucher,
    voucher_domain,
)

__all__ = ["ChannelClientScheme", "ChannelPolicy", "ChannelSpending"]


class ChannelClientScheme:
    """Pays "channel" offers (a `ClientScheme`). Thread-safe; one per agent key.

    Args:
        signer: signs deposits and vouchers.
        policy: the spending policy (a `ChannelSpending` is built on it: see `spending`).
        store: the agent's channels (`ClientChannelStore(directory)` to survive restarts).
        channel_policy: when to open channels (see `ChannelPolicy`).
        clock / salt_factory: injectable for deterministic tests.
    """

    scheme = CHANNEL_SCHEME

    def __init__(
        self,
        signer: Signer,
        policy: SpendingPolicy,
        store: ClientChannelStore | None = None,
        channel_policy: ChannelPolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
        salt_factory: Callable[[], bytes] = lambda: secrets.token_bytes(32),
    ) -> None:
        self.signer = signer
        self.store = store if store is not None else ClientChannelStore.in_memory()
        self.spending = ChannelSpending(policy, self.store, signer.address, channel_policy)
        self.channel_policy = self.spending.channel_policy
        self._clock = clock
        self._salt_factory = salt_factory
        self._lock = threading.RLock()
        # Vouchers signed and not yet answered, channel id -> {cumulative: price}: a statement
        # that reports their slices unpaid is not believed for them.
        self._inflight: dict[str, dict[int, int]] = {}

    def payment_auth(self, *, exact: bool = True, **options: Any) -> PaymentAuth:
        """A `PaymentAuth` paying by channel first and, if `exact`, "exact" otherwise.
        `options` go to `PaymentAuth` (a `nonce_factory` also to the "exact" scheme)."""
        schemes: list[ClientScheme] = [self]
        if exact:
            nonces = options.get("nonce_factory", random_nonce)
            schemes.append(ExactClientScheme(self.signer, clock=self._clock, nonce_factory=nonces))
        return PaymentAuth(self.signer, self.spending, schemes=schemes, **options)

    def expect(self, payee: str, reads: int) -> None:
        """Plan `reads` reads from `payee`: a channel opens when that is enough."""
        self.spending.expect(payee, reads)

    def channels(self) -> list[ChannelRecord]:
        """This agent's channels."""
        return [r for r in self.store if r.payer == self.signer.address]

    # -- ClientScheme ------------------------------------------------------------------------

    def sign(self, offer: PaymentRequirements, challenge: PaymentRequired) -> PaymentPayload:
        """A voucher for one read (and the deposit when the channel is new). The payment is
        its own ticket: `settled` and `refused` read the voucher back from it."""
        with self._lock:
            record = (
                self.spending.usable(offer)
                or self._topped_up(offer)
                or self._new_channel(offer, challenge)
            )
            cumulative = self._allocate(record, offer.amount)
            self._inflight.setdefault(record.channel_id, {})[cumulative] = offer.amount
            opening = record.open_payload if record.status == "opening" else None
            if opening is not None and self._expired(opening):
                opening = record.open_payload = self._sign_open(record, offer)
            top_up = record.top_up_payload
            if top_up is not None and self._expired(top_up):
                salt = bytes.fromhex(top_up["salt"][2:])
                top_up = record.top_up_payload = self._sign_top_up(record, offer, salt)
            self.store.save(record)  # before the voucher leaves: `top` never goes back
        domain = voucher_domain(parse_caip2(offer.network), record.manager)
        channel = bytes.fromhex(record.channel_id[2:])
        signature = sign_voucher(self.signer, domain, Voucher(channel, cumulative))
        payload: dict[str, Any] = {
            "channelId": record.channel_id,
            "cumulativeAmount": str(cumulative),
            "signature": "0x" + signature.hex(),
        }
        if opening is not None:
            payload["open"] = opening
        if top_up is not None:
            payload["topUp"] = top_up
        return PaymentPayload(
            x402_version=X402_VERSION,
            resource=challenge.resource,
            accepted=offer,
            payload=ChannelPayload.from_wire(payload).to_wire(),
        )

    def settled(self, payment: PaymentPayload, settlement: SettleResponse) -> None:
        statement = _statement(settlement.extensions)
        with self._lock:
            record, voucher = self._answered(payment, statement)
            if record is None:
                return
            inflight = self._inflight.get(record.channel_id, {})
            settle(record, voucher, payment.accepted.amount, statement, inflight)
            self.store.save(record)

    def refused(self, payment: PaymentPayload, reason: str | None) -> None:
        with self._lock:
            record, voucher = self._answered(payment, None)
            if record is None:
                return
            refuse(record, voucher, reason)
            self.store.save(record)

    def _answered(
        self, payment: PaymentPayload, statement: ChannelStatement | None
    ) -> tuple[ChannelRecord | None, VoucherTicket | None]:
        """The channel an answer to `payment` is about, and `payment`'s voucher if it is on
        that channel; the voucher is no longer in flight."""
        voucher = VoucherTicket.of(payment)
        if voucher is not None:
            self._inflight.get(voucher.channel_id, {}).pop(voucher.cumulative, None)
        if statement is not None:
            record = self.store.get(statement.channel_id)
        elif voucher is not None:
            record = self.store.get(voucher.channel_id)
        else:
            record = self.spending.usable(payment.accepted)
        if record is None or voucher is None or voucher.channel_id != record.channel_id:
            return record, None
        return record, voucher

    # -- resuming from the server ------------------------------------------------------------

    def resume(self, http: httpx.Client, *, origin: str | None = None) -> int:
        """Refresh every channel not closed from its server (`GET /channels/{id}`); return how
        many were refreshed. Call it after a restart, or when a channel went stale."""
        refreshed = 0
        for record in self._resumable(origin):
            response = http.get(f"{origin or record.origin}/channels/{record.channel_id}")
            refreshed += self._resumed(record, response)
        return refreshed

    async def aresume(self, http: httpx.AsyncClient, *, origin: str | None = None) -> int:
        """`resume` for an async client (the store's writes run off the event loop)."""
        refreshed = 0
        for record in self._resumable(origin):
            response = await http.get(f"{origin or record.origin}/channels/{record.channel_id}")
            refreshed += await anyio.to_thread.run_sync(self._resumed, record, response)
        return refreshed

    def _resumable(self, origin: str | None) -> list[ChannelRecord]:
        return [
            r
            for r in self.channels()
            if r.status in ("open", "opening", "stale", "exhausted")
            and (origin is None or r.origin == origin)
        ]

    def _resumed(self, record: ChannelRecord, response: httpx.Response) -> int:
        if response.status_code == 404 and record.status == "opening":
            return 0  # not opened yet: the deposit goes with the next read
        try:
            statement = ChannelStatement.from_wire(response.json())
        except (ValueError, ValidationError):
            return 0
        with self._lock:
            adopt(record, statement, self._inflight.get(record.channel_id, {}))
            if record.status in ("opening", "stale"):
                record.status, record.open_payload = "open", None
            if statement.status != "open":
                record.status = "closing" if statement.status == "closing" else "closed"
            self.store.save(record)
        return 1

    # -- signing deposits ------------------------------------------------------------------------

    def _new_channel(self, offer: PaymentRequirements, challenge: PaymentRequired) -> ChannelRecord:
        extra = ChannelOfferExtra.from_wire(offer.extra)
        deposit = self.spending.deposit_for(offer)
        if deposit is None:
            raise ValueError("no channel can be opened for this offer within the budget")
        salt = self._salt_factory()
        payer = self.signer.address
        chain_id = parse_caip2(offer.network)
        channel = channel_id(
            payer, offer.pay_to, offer.asset, salt, manager=extra.channel_manager, chain_id=chain_id
        )
        origin = ""
        if challenge.resource is not None:
            parts = urlsplit(challenge.resource.url)
            origin = f"{parts.scheme}://{parts.netloc}"
        record = ChannelRecord(
            channel_id="0x" + channel.hex(),
            network=offer.network,
            manager=extra.channel_manager,
            payee=offer.pay_to,
            asset=offer.asset,
            payer=payer,
            salt="0x" + salt.hex(),
            deposit=deposit,
            origin=origin,
            created_at=self._clock(),
        )
        record.open_payload = self._sign_open(record, offer)
        return record

    def _sign_open(self, record: ChannelRecord, offer: PaymentRequirements) -> dict[str, Any]:
        validity = self.channel_policy.open_validity
        return signed_open(self.signer, record, offer, now=int(self._clock()), validity=validity)

    def _topped_up(self, offer: PaymentRequirements) -> ChannelRecord | None:
        """A used-up channel of ours for `offer`'s terms, topped up (the top-up signed and
        counted in its deposit), if there is one and the policy has a deposit for it."""
        record = self.spending.toppable(offer)
        if record is None:
            return None
        amount = self.spending.deposit_for(offer)
        if amount is None:
            return None
        record.top_up_amount = amount
        record.deposit += amount
        record.status = "open"
        record.top_up_payload = self._sign_top_up(record, offer, self._salt_factory())
        return record

    def _sign_top_up(
        self, record: ChannelRecord, offer: PaymentRequirements, salt: bytes
    ) -> dict[str, Any]:
        validity = self.channel_policy.open_validity
        now = int(self._clock())
        return signed_top_up(self.signer, record, offer, salt, now=now, validity=validity)

    def _expired(self, opening: dict[str, Any]) -> bool:
        valid_before = int(opening["authorization"]["validBefore"])
        return valid_before <= self._clock() + 60

    @staticmethod
    def _allocate(record: ChannelRecord, price: int) -> int:
        """A fresh total for one read: in an unpaid range if one fits, else on top."""
        for index, (low, high) in enumerate(record.unpaid):
            if high - low >= price:
                record.unpaid[index] = [low + price, high]
                record.unpaid = [r for r in record.unpaid if r[1] > r[0]]
                return low + price
        record.top += price
        return record.top


def _statement(extensions: dict[str, Any] | None) -> ChannelStatement | None:
    raw = info_of(extensions, CHANNEL_EXTENSION)  # {info, schema} in a 402, bare in a 200
    if raw is None:
        return None
    try:
        return ChannelStatement.from_wire(raw)
    except ValidationError:
        return None
