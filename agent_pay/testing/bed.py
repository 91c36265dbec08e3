"""A testbed for protocol experiments: chain, tokens, facilitator, server and agents in one process.

    bed = Testbed.create()                     # embedded chain, USDX + CNYX, sample articles
    agent = bed.agent(funds={"USDX": "5"})     # a fresh key, funded, with a spending policy
    with bed.client(agent) as http:            # httpx.Client straight into the ASGI app
        http.get("/articles/why-micropayments-failed").json()["complete"]   # True
    bed.balance(agent.address, "USDX")         # 4.9 USDX, in atomic units

Everything is real — py-evm, the Vyper token, EIP-712 signatures, the FastAPI app — only the
network hop is skipped (ASGI transport). Standing one up takes a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
from anyio.from_thread import start_blocking_portal
from fastapi import FastAPI

from agent_pay.client.auth import Decision, PaymentAuth
from agent_pay.client.channel_store import ClientChannelStore
from agent_pay.client.channels import ChannelClientScheme, ChannelPolicy
from agent_pay.client.policy import Spending, SpendingPolicy
from agent_pay.client.receipts import ReceiptStore
from agent_pay.signing import LocalSigner
from agent_pay.stack import Stack, sample_articles_dir

__all__ = ["SyncASGITransport", "TestAgent", "Testbed", "sample_articles_dir"]


class SyncASGITransport(httpx.BaseTransport):
    """Drive an ASGI app from a sync `httpx.Client`: each request runs on an event loop in a
    helper thread (an anyio blocking portal), the way Starlette's TestClient does it."""

    def __init__(self, app: FastAPI) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self._portal_cm = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def send() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            inner = httpx.Request(
                request.method, request.url, headers=request.headers, content=body
            )
            response = await self._inner.handle_async_request(inner)
            content = await response.aread()
            return response.status_code, response.headers.raw, content

        status, headers, content = self._portal.call(send)
        return httpx.Response(status, headers=headers, content=content, request=request)

    def close(self) -> None:
        self._portal_cm.__exit__(None, None, None)


@dataclass
class TestAgent:
    """A funded agent: a fresh key, a spending policy, and the httpx auth that pays with them."""

    __test__ = False  # not a pytest test class

    signer: LocalSigner
    auth: PaymentAuth
    channels: ChannelClientScheme | None = None  # how it pays "channel" offers, if it does

    @property
    def address(self) -> str:
        return self.signer.address

    @property
    def spending(self) -> Spending:
        return self.auth.spending


class Testbed(Stack):
    """A `Stack` on a fresh embedded chain, plus agents and in-process clients for tests."""

    __test__ = False

    @classmethod
    def create(cls, **options: Any) -> Testbed:
        """Stand everything up on a fresh embedded chain (or the one given): the options are
        `Stack.embedded`'s. The server's ledger is in memory unless one is given;
        `schemes=("exact", "channel")` also offers payment channels (call `close()` at the end:
        it claims what is due)."""
        return cls.embedded(**options)

    # -- agents

    def agent(
        self,
        *,
        funds: Mapping[str, str | Decimal] | None = None,
        max_per_payment: str = "1",
        budget: str = "100",
        tokens: Iterable[str] | None = None,
        decide: Decision | None = None,
        signer: LocalSigner | None = None,
        receipts: ReceiptStore | None = None,
        channel_policy: ChannelPolicy | None = None,
        channel_store: ClientChannelStore | None = None,
    ) -> TestAgent:
        """A new agent with a random key, `funds` minted to it (default 10 of each token) and a
        policy allowing `max_per_payment` per read and `budget` in all, per token. Its receipts
        and pending payments go to `receipts` (in memory by default). With `channel_policy`
        it pays by channel where that policy says so (its channels kept in `channel_store`,
        in memory by default), "exact" otherwise."""
        return self.agents(
            1,
            funds=funds,
            max_per_payment=max_per_payment,
            budget=budget,
            tokens=tokens,
            decide=decide,
            signers=[signer] if signer else None,
            receipts=receipts,
            channel_policy=channel_policy,
            channel_stores=[channel_store] if channel_store is not None else None,
        )[0]

    def agents(
        self,
        count: int,
        *,
        funds: Mapping[str, str | Decimal] | None = None,
        max_per_payment: str = "1",
        budget: str = "100",
        tokens: Iterable[str] | None = None,
        decide: Decision | None = None,
        signers: list[LocalSigner] | None = None,
        receipts: ReceiptStore | None = None,
        channel_policy: ChannelPolicy | None = None,
        channel_stores: list[ClientChannelStore] | None = None,
    ) -> list[TestAgent]:
        """`count` agents, funded with one batch of mints per token (one block); with
        `channel_policy`, each also pays by channel (see `agent`)."""
        funds = funds if funds is not None else {symbol: "10" for symbol in self.tokens}
        symbols = list(tokens) if tokens is not None else list(self.tokens)
        signers = signers or [LocalSigner.random() for _ in range(count)]
        self.fund_many([s.address for s in signers], dict(funds))
        policy = SpendingPolicy.per_token(
            [self.tokens[s].asset for s in symbols], max_per_payment=max_per_payment, budget=budget
        )
        if channel_policy is not None:
            stores = channel_stores or [ClientChannelStore.in_memory() for _ in signers]
            agents = []
            for signer, store in zip(signers, stores, strict=True):
                channels = ChannelClientScheme(signer, policy, store, channel_policy)
                auth = channels.payment_auth(decide=decide, receipts=receipts)
                agents.append(TestAgent(signer, auth, channels))
            return agents
        return [
            TestAgent(s, PaymentAuth(s, policy, decide=decide, receipts=receipts)) for s in signers
        ]

    # -- clients

    def client(self, agent: TestAgent | None = None) -> httpx.Client:
        """A sync httpx client talking to the app in-process; pays as `agent` if given."""
        return httpx.Client(
            transport=SyncASGITransport(self.app),
            base_url="http://testserver",
            auth=agent.auth if agent else None,
        )

    def async_client(self, agent: TestAgent | None = None) -> httpx.AsyncClient:
        """An async httpx client over the ASGI transport; pays as `agent` if given."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url="http://testserver",
            auth=agent.auth if agent else None,
        )

    # -- chain views

    def total_supply(self, symbol: str = "USDX") -> int:
        return self.tokens[symbol].total_supply()

    def balances(self, addresses: Iterable[str]) -> dict[tuple[str, str], int]:
        """Balance of every address in every token, keyed by (address, symbol)."""
        return {(a, s): self.balance(a, s) for a in addresses for s in self.tokens}
