"""Channel voucher reads for a load generator: channels opened at a server, and for each a
lane of vouchers signed ahead, one per read, in order (`agent_pay.bench.loadgen` sends each
lane down one keep-alive connection, as one agent reading on)."""

from __future__ import annotations

import httpx

from agent_pay.chain.base import Chain
from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.stablecoin import Stablecoin
from agent_pay.client.channels import ChannelClientScheme, ChannelPolicy
from agent_pay.client.policy import SpendingPolicy
from agent_pay.protocol import PaymentRequired
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)
from agent_pay.signing import LocalSigner

__all__ = ["voucher_lanes"]


def voucher_lanes(
    url: str, chain: Chain, token: Stablecoin, *, lanes: int, reads: int
) -> list[list[dict[str, str]]]:
    """`lanes` channels, each opened by one paid read of `url` (the article, sold in `token`)
    by a new payer funded here, and `reads` vouchers signed ahead on each: the headers."""
    required = decode_header(httpx.get(url).headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
    offer = next(o for o in required.accepts if (o.scheme, o.asset) == ("channel", token.address))
    deposit = offer.amount * (reads + 2)
    payers = [LocalSigner.random() for _ in range(lanes)]
    token.mint_many(Transactor(chain, dev_signer(0)), [(p.address, deposit) for p in payers])
    budget = str(deposit // 10**token.asset.decimals + 1)
    found = []
    for payer in payers:
        policy = SpendingPolicy.per_token([token.asset], max_per_payment=budget, budget=budget)
        scheme = ChannelClientScheme(
            payer,
            policy,
            channel_policy=ChannelPolicy(min_expected_reads=1, deposits={token.address: deposit}),
        )
        with httpx.Client(auth=scheme.payment_auth(exact=False), timeout=60) as http:
            opened = http.get(url)
        if opened.status_code != 200:
            raise RuntimeError(f"opening a channel failed: {opened.text}")
        found.append(
            [
                {PAYMENT_SIGNATURE_HEADER: encode_header(scheme.sign(offer, required))}
                for _ in range(reads)
            ]
        )
    return found
