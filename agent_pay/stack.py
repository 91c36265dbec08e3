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
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Self

from fastapi import FastAPI

from agent_pay.assets import AssetRegistry
from agent_pay.chain.base import Chain
from agent_pay.chain.channel import ChannelManager
from agent_pay.chain.contract import Transactor
from agent_pay.chain.dev_roles import DEPLOYER_INDEX, FACILITATOR_INDEX
from agent_pay.chain.devkeys import dev_account
from agent_pay.chain.embedded import EmbeddedChain
from agent_pay.chain.stablecoin import Stablecoin, deploy_stablecoins
from agent_pay.channel_setup import ChannelOptions, build_channel_scheme, channel_offers
from agent_pay.facilitator.base import SchemeHandler
from agent_pay.facilitator.channel import ChannelEvmScheme
from agent_pay.facilitator.exact import ExactEvmScheme, SubmittedHook
from agent_pay.facilitator.local import LocalFacilitator
from agent_pay.server.app import Renderer, create_app, render_article
from agent_pay.server.catalogue import Catalogue
from agent_pay.server.channel_offers import channel_router
from agent_pay.server.faults import FaultPlan, FaultPoint
from agent_pay.server.ledger import PaymentKey
from agent_pay.server.offers import DEFAULT_MAX_TIMEOUT_SECONDS, ExactOffers, OfferBuilder
from agent_pay.serving import serve_app
from agent_pay.signing import Signer
from agent_pay.store.errors import StoreUnavailableError
from agent_pay.store.protocols import PaymentLedger, SpentNonces

__all__ = [
    "DEPLOYER_INDEX",
    "FACILITATOR_INDEX",
    "Stack",
    "record_submissions",
    "sample_articles_dir",
]


def sample_articles_dir() -> Path:
    """The articles shipped with agent-pay (installed copy first, then the source tree)."""
    installed = Path(__file__).parent / "_articles"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "articles"


@dataclass
class Stack:
    """Chain + tokens + facilitator + content server app, wired together."""

    chain: Chain
    tokens: dict[str, Stablecoin]
    owner: Transactor
    scheme: ExactEvmScheme
    facilitator: LocalFacilitator
    catalogue: Catalogue
    app: FastAPI
    channels: ChannelEvmScheme | None = None  # the "channel" scheme's handler, when offered
    assets: AssetRegistry = field(init=False)

    def __post_init__(self) -> None:
        self.assets = AssetRegistry(t.asset for t in self.tokens.values())

    @classmethod
    def embedded(
        cls,
        *,
        articles: Path | Catalogue | None = None,
        chain: Chain | None = None,
        render: Renderer = render_article,
        max_timeout_seconds: int = DEFAULT_MAX_TIMEOUT_SECONDS,
        ledger: PaymentLedger | None = None,
        receipt_signer: Signer | None = None,
        faults: FaultPlan | None = None,
        schemes: Sequence[str] = ("exact",),
        channel_options: ChannelOptions | None = None,
    ) -> Self:
        """Deploy the default stablecoins on `chain` (a fresh embedded one by default) and wire
        the facilitator and the server to them. The server's payment `ledger` is in memory
        unless one is given; `receipt_signer` (random by default) signs its receipts.

        `schemes` are offered in that order: "exact", and "channel" (which deploys a channel
        contract, unless `channel_options.manager` names one, and runs its handler in the
        background until `close()`)."""
        _check_schemes(schemes)
        chain = chain or EmbeddedChain()
        owner = Transactor(chain, dev_account(DEPLOYER_INDEX))
        tokens = deploy_stablecoins(owner)
        manager: ChannelManager | None = None
        if "channel" in schemes:
            options = channel_options or ChannelOptions()
            if options.manager is not None:
                manager = ChannelManager.at(chain, options.manager)
            else:
                manager = ChannelManager.deploy(owner, options.grace_period)
        return cls._assemble(
            chain,
            tokens,
            owner,
            Transactor(chain, dev_account(FACILITATOR_INDEX)),
            articles=articles,
            render=render,
            max_timeout_seconds=max_timeout_seconds,
            ledger=ledger,
            receipt_signer=receipt_signer,
            faults=faults,
            schemes=schemes,
            manager=manager,
            channel_options=channel_options,
        )

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
        receipt_signer: Signer | None = None,
        faults: FaultPlan | None = None,
        schemes: Sequence[str] = ("exact",),
        channel_manager: ChannelManager | str | None = None,
        channel_options: ChannelOptions | None = None,
        siwx_nonces: SpentNonces | None = None,
        entitlement_secret: bytes | None = None,
    ) -> Self:
        """Wire a facilitator and a server to contracts already deployed on `chain` (any
        node: `JsonRpcChain` on anvil, on `agent-pay node`, ...); nothing is deployed.
        `ledger`, `receipt_signer`, `faults` and `schemes` are as for `embedded`, and
        `siwx_nonces` and `entitlement_secret` as for `create_app`; with "channel", call
        `close()` at the end (it claims what is due).

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
        _check_schemes(schemes)
        manager: ChannelManager | None = None
        if "channel" in schemes:
            address = channel_options.manager if channel_options is not None else None
            if isinstance(channel_manager, ChannelManager):
                manager = channel_manager
            elif channel_manager is not None or address is not None:
                manager = ChannelManager.at(chain, channel_manager or address or "")
            else:
                raise ValueError(
                    'the "channel" scheme needs a channel contract: pass channel_manager '
                    "(connect deploys nothing)"
                )
        return cls._assemble(
            chain,
            dict(tokens),
            owner or Transactor(chain, dev_account(DEPLOYER_INDEX)),
            facilitator,
            articles=articles,
            render=render,
            max_timeout_seconds=max_timeout_seconds,
            ledger=ledger,
            receipt_signer=receipt_signer,
            faults=faults,
            schemes=schemes,
            manager=manager,
            channel_options=channel_options,
            siwx_nonces=siwx_nonces,
            entitlement_secret=entitlement_secret,
        )

    @classmethod
    def _assemble(
        cls,
        chain: Chain,
        tokens: dict[str, Stablecoin],
        owner: Transactor,
        gas_payer: Transactor,
        *,
        articles: Path | Catalogue | None,
        render: Renderer,
        max_timeout_seconds: int,
        ledger: PaymentLedger | None,
        receipt_signer: Signer | None,
        faults: FaultPlan | None,
        schemes: Sequence[str],
        manager: ChannelManager | None,
        channel_options: ChannelOptions | None,
        siwx_nonces: SpentNonces | None = None,
        entitlement_secret: bytes | None = None,
    ) -> Self:
        """The facilitator's handlers, the server's offers in `schemes` order, the app; the
        channel handler (on `manager`) is started."""
        scheme = ExactEvmScheme(tokens.values(), gas_payer)
        if not isinstance(articles, Catalogue):
            articles = Catalogue.from_directory(articles or sample_articles_dir())
        registry = AssetRegistry(t.asset for t in tokens.values())
        handlers: list[SchemeHandler] = [scheme]
        builders: list[OfferBuilder] = []
        channels: ChannelEvmScheme | None = None
        for name in schemes:
            if name == "exact":
                builders.append(ExactOffers(registry, max_timeout_seconds=max_timeout_seconds))
            else:
                channels = build_channel_scheme(
                    chain, tokens.values(), owner, gas_payer, channel_options, manager=manager
                )
                handlers.append(channels)
                builders.append(channel_offers(registry, channels, channel_options))
        facilitator = LocalFacilitator(handlers)
        app = create_app(
            articles,
            registry,
            facilitator,
            render=render,
            schemes=builders,
            ledger=ledger,
            siwx_nonces=siwx_nonces,
            receipt_signer=receipt_signer,
            entitlement_secret=entitlement_secret,
            faults=faults,
            records_submissions=True,
        )
        scheme.on_submitted = record_submissions(app.state.ledger, app.state.faults)
        if channels is not None:
            app.include_router(channel_router(channels))
            channels.start()
        return cls(chain, tokens, owner, scheme, facilitator, articles, app, channels)

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

    @property
    def ledger(self) -> PaymentLedger:
        """The server's payment ledger."""
        ledger: PaymentLedger = self.app.state.ledger
        return ledger

    def close(self) -> None:
        """Stop the background parts: the channel handler claims every voucher still due (one
        last round, waiting for its transactions) and writes its state. Call it after the
        server stopped taking requests. (Safe to call more than once.)"""
        if self.channels is not None:
            self.channels.close()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Run the content server on uvicorn in a background thread; yield its base URL."""
        with serve_app(self.app, host, port) as url:
            yield url


def _check_schemes(schemes: Sequence[str]) -> None:
    for name in schemes:
        if name not in ("exact", "channel"):
            raise ValueError(f"unknown scheme {name!r}: use exact and/or channel")


def record_submissions(ledger: PaymentLedger, faults: FaultPlan | None = None) -> SubmittedHook:
    """The in-process facilitator's `on_submitted` hook for a server in the same process: the
    ledger records each "exact" settlement transaction just before it is broadcast (and a fault
    plan may stop the process right there). If the write fails, nothing is broadcast; on a
    shared store, nor if it is refused: another instance took the payment over (this one was
    frozen past its lease), and only the owner may settle it."""

    def submitted(payer: str, nonce: bytes, tx_hash: str) -> None:
        key = PaymentKey("exact", payer, "0x" + nonce.hex())
        if not ledger.record_submission(key, tx_hash) and ledger.shared:
            raise StoreUnavailableError(f"{key} is no longer this instance's to settle")
        if faults is not None:
            faults.hit(FaultPoint.SUBMITTED)

    return submitted
