"""Channel (voucher) reads for a load generator: payers that opened a channel with a server, and
lanes of their vouchers, each lane one payer's vouchers in order.

A payer opens its channel with one paid read through its `PaymentAuth` (the deposit and the first
voucher, over HTTP, as any agent would); after that its vouchers are signed here ahead of time,
`ChannelClientScheme.sign` each, so that the load generator only sends them. One lane per payer:
a connection takes a whole lane and sends it one request at a time, so each channel's vouchers
arrive in order, as one agent reading one article after another sends them. A lane cut short by
the time cap leaves its unsent vouchers' slices unpaid: the next lane goes on above them, which
the payee's book records as an unpaid range (the protocol's rule for a lost request), and the
payer owes nothing for them.

    payers = open_channels(base, path, signers, usdx.asset, reads_each=5_000)
    lanes = payers.lanes(per_payer=400)
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from agent_pay.assets import Asset
from agent_pay.client.policy import SpendingPolicy
from agent_pay.client.schemes import ClientScheme
from agent_pay.protocol import PaymentRequired, PaymentRequirements
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)
from agent_pay.signing import LocalSigner

__all__ = ["ChannelPayers", "open_channels"]


@dataclass
class ChannelPayers:
    """Payers with an open channel to one server, and what they are paying for."""

    challenge: PaymentRequired
    offer: PaymentRequirements
    schemes: list[ClientScheme]

    def lanes(self, per_payer: int) -> list[list[dict[str, str]]]:
        """`per_payer` new vouchers from each payer, one lane each."""
        return [
            [
                {PAYMENT_SIGNATURE_HEADER: encode_header(scheme.sign(self.offer, self.challenge))}
                for _ in range(per_payer)
            ]
            for scheme in self.schemes
        ]


def open_channels(
    base: str, path: str, signers: list[LocalSigner], asset: Asset, *, reads_each: int
) -> ChannelPayers:
    """Open a channel in `asset` from each of `signers` with the server at `base` by one paid
    read of `path`, each deposit sized for `reads_each` reads (each signer must hold it)."""
    from agent_pay.client.channels import ChannelClientScheme, ChannelPolicy

    with httpx.Client(base_url=base, timeout=60) as http:
        challenge = decode_header(http.get(path).headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
        offer = next(
            (o for o in challenge.accepts if o.scheme == "channel" and o.asset == asset.address),
            None,
        )
        if offer is None:
            raise RuntimeError(f"{base}{path} offers no channel in {asset.symbol}")
        policy = SpendingPolicy.per_token([asset], max_per_payment="1", budget="100000000")
        schemes: list[ClientScheme] = []
        for signer in signers:
            scheme = ChannelClientScheme(
                signer,
                policy,
                channel_policy=ChannelPolicy(deposit_reads=reads_each, min_expected_reads=1),
            )
            first = http.get(path, auth=scheme.payment_auth(exact=False))
            if first.status_code != 200:
                raise RuntimeError(f"opening a channel failed: {first.status_code} {first.text}")
            schemes.append(scheme)
    return ChannelPayers(challenge, offer, schemes)
