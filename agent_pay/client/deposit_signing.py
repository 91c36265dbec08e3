"""The deposits a channel client signs: the `ReceiveWithAuthorization` that opens a channel
(`open`) and the one that tops it up (`topUp`), each as its wire payload.

Both are EIP-3009 authorizations from the payer to the channel contract, signed under the
token's EIP-712 domain, valid from a little before `now` (clock skew) for `validity` seconds;
their nonces commit to the channel (see `agent_pay.signing.voucher`).
"""

from __future__ import annotations

from typing import Any

from agent_pay.client.channel_store import ChannelRecord
from agent_pay.client.schemes import CLOCK_SKEW_SECONDS
from agent_pay.protocol import PaymentRequirements
from agent_pay.protocol.channel import ChannelOpen, ChannelTopUp
from agent_pay.protocol.networks import parse_caip2
from agent_pay.signing import Signer, TokenDomain, receive_with_authorization_typed_data
from agent_pay.signing.eip3009 import TransferAuthorization
from agent_pay.signing.voucher import open_authorization, top_up_authorization

__all__ = ["signed_open", "signed_top_up"]


def signed_open(
    signer: Signer, record: ChannelRecord, offer: PaymentRequirements, *, now: int, validity: int
) -> dict[str, Any]:
    """The `open` payload depositing `record.deposit` into the channel `record` describes."""
    auth = open_authorization(
        payer=record.payer,
        payee=record.payee,
        token=record.asset,
        amount=record.deposit,
        salt=bytes.fromhex(record.salt[2:]),
        signer=None,
        valid_after=max(0, now - CLOCK_SKEW_SECONDS),
        valid_before=now + validity,
        manager=record.manager,
        chain_id=parse_caip2(record.network),
    )
    opening = ChannelOpen(
        salt=record.salt, authorization=auth.to_wire(), signature=_signature(signer, offer, auth)
    )
    return opening.to_wire()


def signed_top_up(
    signer: Signer,
    record: ChannelRecord,
    offer: PaymentRequirements,
    salt: bytes,
    *,
    now: int,
    validity: int,
) -> dict[str, Any]:
    """The `topUp` payload adding `record.top_up_amount` to the channel, its nonce from
    `salt` (the same salt signs the same top-up again, should it expire unused)."""
    auth = top_up_authorization(
        payer=record.payer,
        channel=bytes.fromhex(record.channel_id[2:]),
        amount=record.top_up_amount,
        salt=salt,
        valid_after=max(0, now - CLOCK_SKEW_SECONDS),
        valid_before=now + validity,
        manager=record.manager,
    )
    top_up = ChannelTopUp(
        salt="0x" + salt.hex(),
        authorization=auth.to_wire(),
        signature=_signature(signer, offer, auth),
    )
    return top_up.to_wire()


def _signature(signer: Signer, offer: PaymentRequirements, auth: TransferAuthorization) -> str:
    domain = TokenDomain.from_requirements(offer)
    signature = signer.sign_typed_data(receive_with_authorization_typed_data(domain, auth))
    return "0x" + signature.hex()
