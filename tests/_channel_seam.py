"""A channel scheme to run the `ChannelFacilitator` conformance suite on: the facilitator service
(`assemble_facilitator`) on a free port, and a content server behind it that agents open
channels through. Both seams reach the same channel handler: `LocalChannelFacilitator` in
this process, `HttpChannelFacilitator` over the service's channel endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from agent_pay.assembly.root import FacilitatorService, assemble, assemble_facilitator
from agent_pay.chain.channel import ChannelManager
from agent_pay.chain.contract import Transactor
from agent_pay.chain.dev_roles import DEPLOYER_INDEX, FACILITATOR_SERVICE_INDEX
from agent_pay.chain.devkeys import dev_signer
from agent_pay.client.channels import ChannelPolicy
from agent_pay.facilitator.base import ChannelFacilitator
from agent_pay.facilitator.channel.local import LocalChannelFacilitator
from agent_pay.facilitator.channel.remote import HttpChannelFacilitator
from agent_pay.protocol import PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo
from agent_pay.protocol.codec import PAYMENT_REQUIRED_HEADER, decode_header
from agent_pay.serving import serve_app
from agent_pay.signing.voucher import Voucher, sign_voucher, voucher_domain
from agent_pay.testing import TestAgent, Testbed
from tests.test_e2e_channel import CATALOGUE, GRACE, QUIET

T = TypeVar("T")

DEPOSIT_READS = 10


@dataclass
class SeamBed:
    bed: Testbed  # the chain and its tokens (bed.app is not used)
    service: FacilitatorService
    facilitator: str  # the service's URL
    server: str  # a content server's URL, behind the service

    def seam(self, kind: str) -> ChannelFacilitator:
        """A seam of `kind` ("local" or "http") on the service's channel handler. An "http"
        one's connections live on the loop that first uses it: make one per `run`."""
        assert self.service.channels is not None
        if kind == "local":
            return LocalChannelFacilitator(self.service.channels)
        return HttpChannelFacilitator(self.facilitator, self.service.channels.terms)

    def run(self, kind: str, steps: Callable[[ChannelFacilitator], Awaitable[T]]) -> T:
        """`steps` on a fresh seam of `kind`, on an event loop of their own."""

        async def go() -> T:
            seam = self.seam(kind)
            try:
                return await steps(seam)
            finally:
                if isinstance(seam, HttpChannelFacilitator):
                    await seam.aclose()

        return asyncio.run(go())

    def opened(self, slug: str) -> tuple[TestAgent, bytes]:
        """A fresh agent, its channel (deposit `DEPOSIT_READS` reads) opened by reading `slug`."""
        policy = ChannelPolicy(min_expected_reads=1, deposit_reads=DEPOSIT_READS)
        agent = self.bed.agent(funds={"USDX": "5"}, tokens=["USDX"], channel_policy=policy)
        with httpx.Client(base_url=self.server, auth=agent.auth) as http:
            assert http.get(f"/articles/{slug}").status_code == 200
        assert agent.channels is not None
        (record,) = agent.channels.channels()
        return agent, bytes.fromhex(record.channel_id[2:])

    def offer(self, slug: str) -> PaymentRequirements:
        """The content server's channel offer for `slug`."""
        with httpx.Client(base_url=self.server) as http:
            header = http.get(f"/articles/{slug}").headers[PAYMENT_REQUIRED_HEADER]
        required = decode_header(header, PaymentRequired)
        return next(o for o in required.accepts if o.scheme == "channel")

    def voucher(
        self,
        agent: TestAgent,
        channel: bytes,
        cumulative: int,
        offer: PaymentRequirements,
        slug: str,
    ) -> PaymentPayload:
        """`agent`'s voucher `cumulative` on `channel`, paying `offer` for `slug`."""
        assert self.service.channels is not None
        domain = voucher_domain(self.bed.chain.chain_id, self.service.channels.manager.address)
        signature = sign_voucher(agent.signer, domain, Voucher(channel, cumulative))
        payload: dict[str, Any] = {
            "channelId": "0x" + channel.hex(),
            "cumulativeAmount": str(cumulative),
            "signature": "0x" + signature.hex(),
        }
        return PaymentPayload(
            x402_version=2,
            resource=ResourceInfo(url=f"{self.server}/articles/{slug}"),
            accepted=offer,
            payload=payload,
        )


@contextmanager
def seam_bed() -> Iterator[SeamBed]:
    """The facilitator service, with channels, and a content server behind it (module doc)."""
    bed = Testbed.create(articles=CATALOGUE)
    manager = ChannelManager.deploy(Transactor(bed.chain, dev_signer(DEPLOYER_INDEX)), GRACE)
    gas = Transactor(bed.chain, dev_signer(FACILITATOR_SERVICE_INDEX))
    service = assemble_facilitator(
        bed.chain, bed.tokens, gas, channel_manager=manager, channel_options=QUIET
    )
    try:
        with serve_app(service.app) as facilitator:
            # Behind the service: its clients of the service close as the server shuts down.
            parts = assemble(
                bed.chain,
                bed.tokens,
                facilitator,
                catalogue=CATALOGUE,
                schemes=("channel",),
                channel_options=QUIET,
            )
            with parts.serve() as server:
                yield SeamBed(bed, service, facilitator, server)
            parts.close()
    finally:
        service.close()
        bed.close()
