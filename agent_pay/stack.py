"""The whole system on one machine: chain, stablecoins, facilitator and content server.

    stack = Stack.embedded()                    # py-evm chain, USDX + CNYX, sample articles
    stack.fund(agent_address, "USDX", "5")      # mint (local chains only)
    with stack.serve() as base_url:             # real uvicorn on 127.0.0.1, a free port
        ...                                     # agents pay over real HTTP

The demo, the example agent and the test toolkit are all built on this.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Self

from fastapi import FastAPI

from agent_pay.assembly.channels import ChannelOptions
from agent_pay.assembly.root import Assembly, assemble
from agent_pay.assets import AssetRegistry
from agent_pay.boundary import ServerLimits
from agent_pay.chain.base import Chain
from agent_pay.chain.channel import ChannelManager
from agent_pay.chain.contract import Transactor
from agent_pay.chain.dev_roles import DEPLOYER_INDEX, FACILITATOR_INDEX
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.embedded import EmbeddedChain
from agent_pay.chain.stablecoin import Stablecoin, deploy_stablecoins
from agent_pay.facilitator.channel.scheme import ChannelEvmScheme
from agent_pay.facilitator.exact import ExactEvmScheme
from agent_pay.facilitator.local import LocalFacilitator
from agent_pay.server.app import ContentServer
from agent_pay.server.catalogue import Catalogue
from agent_pay.server.faults import FaultPlan
from agent_pay.server.offers import DEFAULT_MAX_TIMEOUT_SECONDS
from agent_pay.server.reads import Renderer, render_article
from agent_pay.signing import Signer
from agent_pay.store.protocols import PaymentLedger, SpentNonces

__all__ = [
    "DEPLOYER_INDEX",
    "FACILITATOR_INDEX",
    "Stack",
    "sample_articles_dir",
]


def sample_articles_dir() -> Path:
    """The articles shipped with agent-pay (installed copy first, then the source tree)."""
    installed = Path(__file__).parent / "_articles"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "articles"


class Stack:
    """Chain + tokens + facilitator + content server, assembled (`agent_pay.assembly.root`)
    with an in-process facilitator, and the tokens' owner to mint with.

    `parts` is what was assembled; the attributes below are its parts.
    """

    def __init__(self, parts: Assembly, owner: Transactor) -> None:
        if parts.exact is None or not isinstance(parts.facilitator, LocalFacilitator):
            raise ValueError("a Stack settles in this process")
        self.parts = parts
        self.owner = owner

    @classmethod
    def embedded(
        cls,
        *,
        articles: Path | Catalogue | None = None,
        chain: Chain | None = None,
        render: Renderer = render_article,
        max_timeout_seconds: int = DEFAULT_MAX_TIMEOUT_SECONDS,
        ledger: PaymentLedger | None = None,
        siwx_nonces: SpentNonces | None = None,
        entitlement_secret: bytes | None = None,
        receipt_signer: Signer | None = None,
        faults: FaultPlan | None = None,
        schemes: Sequence[str] = ("exact",),
        channel_options: ChannelOptions | None = None,
    ) -> Self:
        """Deploy the default stablecoins on `chain` (a fresh embedded one by default) and wire
        the facilitator and the server to them. The server's payment `ledger` is in memory
        unless one is given; `receipt_signer` (random by default) signs its receipts;
        `siwx_nonces` and `entitlement_secret` are as for `create_server` (several servers
        on one shared store pass the store's nonces and one secret).

        `schemes` are offered in that order: "exact", and "channel" (which deploys a channel
        contract, unless `channel_options.manager` names one, and runs its handler in the
        background until `close()`)."""
        chain = chain or EmbeddedChain()
        owner = Transactor(chain, dev_signer(DEPLOYER_INDEX))
        tokens = deploy_stablecoins(owner)
        parts = assemble(
            chain,
            tokens,
            Transactor(chain, dev_signer(FACILITATOR_INDEX)),
            catalogue=_catalogue(articles),
            owner=owner,
            schemes=schemes,
            channel_options=channel_options,
            ledger=ledger,
            siwx_nonces=siwx_nonces,
            entitlement_secret=entitlement_secret,
            receipt_signer=receipt_signer,
            faults=faults,
            render=render,
            max_timeout_seconds=max_timeout_seconds,
        )
        return cls(parts, owner)

    @classmethod
    def connect(
        cls,
        chain: Chain,
        tokens: Mapping[str, Stablecoin],
        facilitator: Transactor,
        *,
        owner: Transactor | None = None,
        articles: Path | Catalogue | None = None,
        render: Renderer = render_article,
        max_timeout_seconds: int = DEFAULT_MAX_TIMEOUT_SECONDS,
        ledger: PaymentLedger | None = None,
        siwx_nonces: SpentNonces | None = None,
        entitlement_secret: bytes | None = None,
        receipt_signer: Signer | None = None,
        faults: FaultPlan | None = None,
        schemes: Sequence[str] = ("exact",),
        channel_manager: ChannelManager | str | None = None,
        channel_options: ChannelOptions | None = None,
    ) -> Self:
        """Wire a facilitator and a server to contracts already deployed on `chain` (any
        node: `JsonRpcChain` on anvil, on `agent-pay node`, ...); nothing is deployed.
        `ledger`, `receipt_signer`, `faults` and `schemes` are as for `embedded`; with
        "channel", call `close()` at the end (it claims what is due).

        Args:
            tokens: the stablecoins to sell in, by symbol (see `agent_pay.node.deployment`).
            facilitator: the account that pays settlement gas (and the channel claims').
            owner: the tokens' owner, whom `fund` mints with; throwaway dev account
                #DEPLOYER_INDEX by default, which owns them on a local dev chain only.
            channel_manager: the channel contract (or its address), for "channel"; else
                `channel_options.manager`.

        Raises:
            ValueError: an unknown scheme, or "channel" without a channel contract.
        """
        if isinstance(channel_manager, str):
            channel_manager = ChannelManager.at(chain, channel_manager)
        named = channel_options is not None and channel_options.manager is not None
        if "channel" in schemes and channel_manager is None and not named:
            raise ValueError(
                'the "channel" scheme needs a channel contract: pass channel_manager '
                "(connect deploys nothing)"
            )
        parts = assemble(
            chain,
            tokens,
            facilitator,
            catalogue=_catalogue(articles),
            schemes=schemes,
            channel_manager=channel_manager,
            channel_options=channel_options,
            ledger=ledger,
            siwx_nonces=siwx_nonces,
            entitlement_secret=entitlement_secret,
            receipt_signer=receipt_signer,
            faults=faults,
            render=render,
            max_timeout_seconds=max_timeout_seconds,
        )
        return cls(parts, owner or Transactor(chain, dev_signer(DEPLOYER_INDEX)))

    # -- the parts

    @property
    def chain(self) -> Chain:
        return self.parts.chain

    @property
    def tokens(self) -> Mapping[str, Stablecoin]:
        return self.parts.tokens

    @property
    def assets(self) -> AssetRegistry:
        return self.parts.assets

    @property
    def scheme(self) -> ExactEvmScheme:
        """The in-process facilitator's "exact" handler."""
        assert self.parts.exact is not None  # checked by __init__
        return self.parts.exact

    @property
    def channels(self) -> ChannelEvmScheme | None:
        """The "channel" scheme's handler, when offered."""
        return self.parts.channels

    @property
    def facilitator(self) -> LocalFacilitator:
        assert isinstance(self.parts.facilitator, LocalFacilitator)  # checked by __init__
        return self.parts.facilitator

    @property
    def server(self) -> ContentServer:
        """The content server and its parts (ledger, checkout, entitlements, ...)."""
        return self.parts.server

    @property
    def catalogue(self) -> Catalogue:
        return self.server.catalogue

    @property
    def app(self) -> FastAPI:
        return self.server.app

    @property
    def ledger(self) -> PaymentLedger:
        """The server's payment ledger."""
        return self.server.ledger

    # -- minting and balances

    def fund(self, address: str, symbol: str, amount: str | Decimal) -> None:
        """Mint `amount` (human units) of `symbol` to `address`."""
        self.fund_many([address], {symbol: amount})

    def fund_many(self, addresses: Iterable[str], funds: dict[str, str | Decimal]) -> None:
        """Mint each of `funds` to every address, one batch of transactions per token."""
        addresses = list(addresses)
        for symbol, amount in funds.items():
            token = self.tokens[symbol]
            atomic = token.asset.parse(amount)
            if atomic and addresses:
                token.mint_many(self.owner, [(a, atomic) for a in addresses])

    def balance(self, address: str, symbol: str = "USDX") -> int:
        return self.tokens[symbol].balance_of(address)

    # -- running

    def close(self) -> None:
        """Stop the background parts: the channel handler claims every voucher still due (one
        last round, waiting for its transactions) and writes its state. Call it after the
        server stopped taking requests. (Safe to call more than once.)"""
        self.parts.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def serve(
        self, host: str = "127.0.0.1", port: int = 0, limits: ServerLimits | None = None
    ) -> Iterator[str]:
        """Run the content server on uvicorn in a background thread, under `limits` (the
        defaults when None); yield its base URL."""
        with self.parts.serve(host, port, limits) as url:
            yield url


def _catalogue(articles: Path | Catalogue | None) -> Catalogue:
    if isinstance(articles, Catalogue):
        return articles
    return Catalogue.from_directory(articles or sample_articles_dir())
