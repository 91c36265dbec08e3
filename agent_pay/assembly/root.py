"""The composition root: a chain, its stablecoins, a facilitator and a content server, put
together in one place from parts given as arguments.

    parts = assemble(chain, tokens, Transactor(chain, account), catalogue=catalogue,
                     schemes=("exact", "channel"), ledger=Ledger.open(data_dir))
    with parts.serve(limits=ServerLimits()) as url:  # uvicorn on a free port
        ...
    parts.close()                                    # the channel handler's last claims

The facilitator runs in this process (settling with a given account, which pays the gas) or
is a remote one (its URL); that remote facilitator's service (`agent-pay facilitator`) is put
together here too (`assemble_facilitator`). In process, the "exact" handler is told each
settlement transaction before it is broadcast and records it in the server's ledger
(`record_submissions`): its hook is given at construction, so the ledger and fault plan are
made first, then the facilitator, then the server. `Stack`, `agent-pay serve` and the
benchmark all assemble this way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from fastapi import APIRouter, FastAPI

from agent_pay.assembly.channels import ChannelOptions, build_channel_scheme, channel_server
from agent_pay.assets import AssetRegistry
from agent_pay.boundary import ServerLimits
from agent_pay.chain.base import Chain
from agent_pay.chain.channel import ChannelManager
from agent_pay.chain.contract import Transactor
from agent_pay.chain.stablecoin import Stablecoin
from agent_pay.facilitator.base import ChannelFacilitator, Facilitator, SchemeHandler
from agent_pay.facilitator.channel.local import LocalChannelFacilitator
from agent_pay.facilitator.channel.remote import HttpChannelFacilitator
from agent_pay.facilitator.channel.scheme import ChannelEvmScheme
from agent_pay.facilitator.exact import ExactEvmScheme, SubmittedHook
from agent_pay.facilitator.http import HttpFacilitatorClient, create_facilitator_app
from agent_pay.facilitator.local import LocalFacilitator
from agent_pay.protocol.networks import caip2
from agent_pay.server.app import ContentServer, create_server
from agent_pay.server.catalogue import Catalogue
from agent_pay.server.faults import FaultPlan, FaultPoint
from agent_pay.server.ledger import Ledger, PaymentKey
from agent_pay.server.offers import DEFAULT_MAX_TIMEOUT_SECONDS, ExactOffers, OfferBuilder
from agent_pay.server.reads import Renderer, render_article
from agent_pay.serving import serve_app
from agent_pay.settings import SCHEMES
from agent_pay.signing import Signer
from agent_pay.store.errors import StoreUnavailableError
from agent_pay.store.protocols import PaymentLedger, SpentNonces

__all__ = [
    "Assembly",
    "ChannelWiring",
    "FacilitatorService",
    "assemble",
    "assemble_facilitator",
    "record_submissions",
    "wire_channels",
]


@dataclass(frozen=True)
class Assembly:
    """What `assemble` put together: the server and the parts it runs on."""

    chain: Chain
    tokens: Mapping[str, Stablecoin]
    facilitator: Facilitator
    server: ContentServer
    exact: ExactEvmScheme | None
    """The in-process "exact" handler; None behind a remote facilitator."""
    channels: ChannelEvmScheme | None
    """The "channel" scheme's handler, when offered in process (started: `close` stops it);
    None behind a remote facilitator, which runs it."""
    assets: AssetRegistry = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "assets", AssetRegistry(t.asset for t in self.tokens.values()))

    @property
    def app(self) -> FastAPI:
        return self.server.app

    @contextmanager
    def serve(
        self, host: str = "127.0.0.1", port: int = 0, limits: ServerLimits | None = None
    ) -> Iterator[str]:
        """Run the content server on uvicorn in a background thread, under `limits` (the
        defaults when None); yield its base URL."""
        with serve_app(self.app, host, port, limits) as url:
            yield url

    def close(self) -> None:
        """Stop the background parts: the channel handler claims every voucher still due (one
        last round, waiting for its transactions) and writes its state. Call it after the
        server stopped taking requests. (Safe to call more than once.) A remote facilitator's
        clients are not closed here but by the server, as it shuts down (ASGI lifespan):
        their connections live on its event loop."""
        if self.channels is not None:
            self.channels.close()


def assemble(
    chain: Chain,
    tokens: Mapping[str, Stablecoin],
    facilitator: Transactor | str,
    *,
    catalogue: Catalogue,
    owner: Transactor | None = None,
    schemes: Sequence[str] = ("exact",),
    channel_manager: ChannelManager | None = None,
    channel_options: ChannelOptions | None = None,
    ledger: PaymentLedger | None = None,
    siwx_nonces: SpentNonces | None = None,
    entitlement_secret: bytes | None = None,
    receipt_signer: Signer | None = None,
    faults: FaultPlan | None = None,
    render: Renderer = render_article,
    max_timeout_seconds: int = DEFAULT_MAX_TIMEOUT_SECONDS,
) -> Assembly:
    """The content server selling `catalogue` in `tokens` on `chain`, offering `schemes` in
    that order, settled by `facilitator`: in this process with that account paying the gas, or
    by the remote facilitator at that URL (which keeps the channels: the server asks it
    for every voucher).

    Args:
        owner: deploys the channel contract when "channel" is offered and neither
            `channel_manager` nor `channel_options.manager` names one.
        ledger: the server's payment ledger (in memory when None; a server passes a file, or
            a shared store's: `agent_pay.store.open_store`).
        siwx_nonces, entitlement_secret: as for `create_server` (a shared store's, and the
            secret every instance on it derives from the shared receipt key).
        receipt_signer: signs the server's receipts (a random key when None).
        faults: where to inject a crash (fault-injection tests only).

    Raises:
        ValueError: an unknown scheme; "channel" in process with no contract to attach to
            and no `owner` to deploy one.
        ChainUnavailableError: "channel" behind a remote facilitator that lists no channels.
    """
    for name in schemes:
        if name not in SCHEMES:
            raise ValueError(f"unknown scheme {name!r}: use exact and/or channel")
    assets = AssetRegistry(t.asset for t in tokens.values())
    ledger = ledger if ledger is not None else Ledger.in_memory()
    faults = faults or FaultPlan()
    exact: ExactEvmScheme | None = None
    if isinstance(facilitator, Transactor):
        # Given its hook now: the ledger hears of each settlement before it is broadcast.
        hook = record_submissions(ledger, faults)
        exact = ExactEvmScheme(tokens.values(), facilitator, on_submitted=hook)
    offers: list[OfferBuilder] = []
    channels: ChannelWiring | None = None
    for name in schemes:
        if name == "exact":
            offers.append(ExactOffers(assets, max_timeout_seconds=max_timeout_seconds))
            continue
        options = channel_options or ChannelOptions()
        handler: ChannelEvmScheme | None = None
        seam: ChannelFacilitator
        if isinstance(facilitator, Transactor):
            handler = build_channel_scheme(
                chain, tokens.values(), owner, facilitator, options, manager=channel_manager
            )
            seam = LocalChannelFacilitator(handler)
        else:  # the facilitator keeps the channels; the server asks it for every voucher
            seam = HttpChannelFacilitator.connect(facilitator, network=caip2(chain.chain_id))
        channels = wire_channels(handler, seam, assets, options)
        offers.append(channels.offers)
    settler: Facilitator
    closing: list[Callable[[], Awaitable[None]]] = []
    if exact is None:
        settler = HttpFacilitatorClient(str(facilitator))
        # Their connections live on the server's event loop: closed as it shuts down.
        closing.append(settler.aclose)
        if channels is not None and isinstance(channels.seam, HttpChannelFacilitator):
            closing.append(channels.seam.aclose)
    else:
        handlers = [channels.handler] if channels and channels.handler else []
        settler = LocalFacilitator([exact, *handlers])
    server = create_server(
        catalogue,
        assets,
        settler,
        render=render,
        schemes=offers,
        ledger=ledger,
        siwx_nonces=siwx_nonces,
        entitlement_secret=entitlement_secret,
        receipt_signer=receipt_signer,
        faults=faults,
        records_submissions=exact is not None,
        routes=channels.routes if channels is not None else (),
        on_shutdown=closing,
    )
    if channels is not None and channels.handler is not None:
        channels.handler.start()  # watch, settle, persist in the background until `close`
    return Assembly(
        chain, tokens, settler, server, exact, channels.handler if channels is not None else None
    )


@dataclass(frozen=True)
class FacilitatorService:
    """What `assemble_facilitator` put together: the facilitator service's app and the
    handlers it runs."""

    app: FastAPI
    exact: ExactEvmScheme
    channels: ChannelEvmScheme | None
    """The "channel" handler (started: `close` stops it); None when it keeps no channels."""

    def close(self) -> None:
        """Stop the channel handler: it claims every voucher still due (one last round) and
        writes its state. Call it after the service stopped taking requests. (Safe to call
        more than once.)"""
        if self.channels is not None:
            self.channels.close()


def assemble_facilitator(
    chain: Chain,
    tokens: Mapping[str, Stablecoin],
    transactor: Transactor,
    *,
    channel_manager: ChannelManager | None = None,
    channel_options: ChannelOptions | None = None,
    limits: ServerLimits | None = None,
) -> FacilitatorService:
    """The facilitator service settling `tokens` on `chain` with `transactor` (which pays the
    gas): "exact" always; "channel" too, on `channel_manager` (or the contract
    `channel_options.manager` names), when there is one. Its app serves x402's facilitator
    endpoints and, with channels, the channel seam's (`agent_pay.facilitator.http.
    create_facilitator_app`); the channel handler is started."""
    exact = ExactEvmScheme(tokens.values(), transactor)
    options = channel_options or ChannelOptions()
    channels: ChannelEvmScheme | None = None
    if channel_manager is not None or options.manager is not None:
        channels = build_channel_scheme(
            chain, tokens.values(), None, transactor, options, manager=channel_manager
        )
    handlers: list[SchemeHandler] = [exact] if channels is None else [exact, channels]
    app = create_facilitator_app(LocalFacilitator(handlers), limits, channels=channels)
    if channels is not None:
        channels.start()  # watch, settle, persist in the background until `close`
    return FacilitatorService(app, exact, channels)


@dataclass(frozen=True)
class ChannelWiring:
    """The "channel" scheme in a server: its facilitator handler (None when a remote
    facilitator runs it), the seam the server reaches it through, the server's offers on it,
    and the routes it adds (`GET /channels/{id}`)."""

    handler: ChannelEvmScheme | None
    seam: ChannelFacilitator
    offers: OfferBuilder
    routes: tuple[APIRouter, ...]


def wire_channels(
    handler: ChannelEvmScheme | None,
    seam: ChannelFacilitator,
    assets: AssetRegistry,
    options: ChannelOptions,
) -> ChannelWiring:
    """How the channel scheme, reached through `seam`, joins a server."""
    offers, router = channel_server(assets, seam, options)
    return ChannelWiring(handler, seam, offers, (router,))


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
