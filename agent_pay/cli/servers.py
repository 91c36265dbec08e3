"""What `agent-pay serve` (the content server) and `agent-pay facilitator` (the facilitator
service) run, against any node. Imported when one of them starts: `agent_pay.cli.serve` only
registers their flags, so that `agent-pay --help` loads none of the server's modules."""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass

from starlette.types import ASGIApp

from agent_pay.assembly.channels import ChannelOptions
from agent_pay.assembly.root import Assembly, assemble, assemble_facilitator
from agent_pay.assets import format_amount
from agent_pay.chain.channel import ChannelManager
from agent_pay.chain.contract import Transactor
from agent_pay.chain.dev_roles import FACILITATOR_SERVICE_INDEX
from agent_pay.chain.rpc import JsonRpcChain, NodeUnavailableError
from agent_pay.cli._common import (
    channel_manager_on,
    connect,
    describe_seconds,
    facilitator_account,
    say,
    tokens_on,
    wait_for_shutdown,
)
from agent_pay.cli.receipts import fault_plan
from agent_pay.errors import ConfigurationError
from agent_pay.server.catalogue import Catalogue
from agent_pay.server.faults import FaultPlan
from agent_pay.server.standby import StandbyApp, create_standby_app
from agent_pay.serving import serve_app
from agent_pay.settings import SCHEMES, Settings
from agent_pay.signing import LocalSigner
from agent_pay.stack import sample_articles_dir
from agent_pay.store.open import Store, open_store
from agent_pay.wallet import server_receipt_key

__all__ = ["CHANNELS_SUBDIR", "facilitator", "serve"]

CHANNELS_SUBDIR = "channels"
"""Where in `server_dir` the channels paid to this server are kept."""


def _gas_warning(chain: JsonRpcChain, address: str) -> None:
    balance = chain.get_balance(address)
    if balance < 10**16:
        say(
            f"warning     {address} holds {format_amount(balance, 18)} ETH for settlement gas: "
            f"fund it (agent-pay fund {address} 1 --token ETH)"
        )


def serve(args: argparse.Namespace, settings: Settings) -> int:
    if settings.workers > 1 and not args.as_worker:
        from agent_pay.cli.workers import supervise

        return supervise(settings)
    # No round trip now: the server starts (previews, 503 for paid reads) while the node is down.
    with JsonRpcChain(settings.chain_url, timeout=settings.rpc_timeout) as chain:
        return _serve(args, settings, chain)


@dataclass
class _Served:
    """What `_serve` built once the chain answered."""

    parts: Assembly
    schemes: tuple[str, ...]
    why: str
    settles: str


def _serve(args: argparse.Namespace, settings: Settings, chain: JsonRpcChain) -> int:
    articles = Catalogue.from_directory(settings.articles or sample_articles_dir())
    # SQLite: one server per data directory (it locks it); PostgreSQL: any number.
    store = open_store(settings.store, settings.server_dir, lease=settings.store_lease)
    try:
        receipt_signer = server_receipt_key(settings)
        _check_shared_key(store, receipt_signer)
    except BaseException:
        store.close()
        raise
    faults = fault_plan(args)
    served: list[_Served] = []

    def build() -> ASGIApp:
        """Everything that needs the chain; raises NodeUnavailableError while it is down."""
        built = _build(settings, chain, articles, store, receipt_signer, faults)
        served.append(built)
        return built.parts.app

    def announce(_: object = None) -> None:
        built = served[0]
        say(f"chain       {chain.chain_id} at {chain.url}")
        say("tokens      " + ", ".join(f"{s} {t.address}" for s, t in built.parts.tokens.items()))
        say(f"schemes     {', '.join(built.schemes)} ({built.why})")
        say(f"settles     through {built.settles}")
        if built.parts.exact is not None:
            _gas_warning(chain, built.parts.exact.signer_address)

    app: ASGIApp
    try:
        app = build()
    except NodeUnavailableError as exc:
        app = StandbyApp(build, create_standby_app(articles), on_ready=announce)
        standby: str | None = str(exc)
    except BaseException:
        store.close()  # a wrong setting: release the data directory's lock
        raise
    else:
        standby = None
    sock = None
    if args.as_worker:  # one of `--workers`: listen beside the others on the supervisor's port
        from agent_pay.cli.workers import listen_shared

        sock = listen_shared(settings.host, settings.port)
    try:
        with serve_app(app, settings.host, settings.port, sock=sock) as url:
            say(f"agent-pay content server on {url}: {len(articles)} articles (GET /articles)")
            say(f"ledger      {store.where}; receipts signed by {receipt_signer.address}")
            if standby is None:
                announce()
            else:
                say(f"chain       unavailable ({standby})")
                say("            serving free previews; paid reads answer 503 until it is back")
            wait_for_shutdown()
            say("stopping    (Ctrl-C or SIGTERM): finishing the requests in flight")
    finally:
        for built in served:
            _close(built.parts)  # the server has stopped: claim the last vouchers
        store.close()
    say("agent-pay serve: stopped")
    return 0


def _build(
    settings: Settings,
    chain: JsonRpcChain,
    articles: Catalogue,
    store: Store,
    receipt_signer: LocalSigner,
    faults: FaultPlan | None,
) -> _Served:
    tokens = tokens_on(chain, settings)
    manager = channel_manager_on(chain, settings)
    schemes, why = _schemes(settings, manager)
    secret = _shared_secret(receipt_signer) if store.shared else None
    facilitator: Transactor | str
    if settings.facilitator_url:
        facilitator = settings.facilitator_url
        settles = f"the facilitator at {settings.facilitator_url}"
    else:
        account, who = facilitator_account(settings, chain)
        facilitator = Transactor(chain, account)
        settles = f"itself, gas paid by {account.address} ({who})"
    parts = assemble(
        chain,
        tokens,
        facilitator,
        catalogue=articles,
        schemes=schemes,
        channel_manager=manager if "channel" in schemes else None,
        channel_options=ChannelOptions(
            data_dir=settings.server_dir / CHANNELS_SUBDIR,
            shared_store=store.channels,  # on a shared store: with leases, beside the ledger
            max_timeout_seconds=settings.max_timeout_seconds,
        ),
        ledger=store.ledger,
        siwx_nonces=store.nonces,
        entitlement_secret=secret,
        receipt_signer=receipt_signer,
        faults=faults,
        max_timeout_seconds=settings.max_timeout_seconds,
    )
    return _Served(parts, schemes, why, settles)


def _check_shared_key(store: Store, signer: LocalSigner) -> None:
    """Every instance on a shared store signs receipts with one key: the first one's."""
    first = store.claim("receipt_signer", signer.address)
    if first != signer.address:
        raise ConfigurationError(
            f"the store {store.where} has receipts signed by {first}, and this instance's "
            f"receipt key is {signer.address}: give every instance the same key "
            "(AGENT_PAY_RECEIPT_KEY, or the same receipt.key file in --server-dir)"
        )


def _shared_secret(signer: LocalSigner) -> bytes:
    """The HMAC key of re-read challenges and sign-in nonces, the same on every instance that
    holds the receipt key (one issues a challenge, another checks it): derived from the key's
    deterministic (RFC 6979) signature of a fixed digest that nothing else signs, so the key
    itself never leaves its signer."""
    digest = hashlib.sha256(b"agent-pay entitlement challenges").digest()
    return hashlib.sha256(signer.unsafe_sign_hash(digest)).digest()


def _schemes(settings: Settings, manager: ChannelManager | None) -> tuple[tuple[str, ...], str]:
    """What to offer, and why."""
    remote = settings.facilitator_url is not None
    if not settings.schemes:
        if manager is None:
            return ("exact",), "no channel contract on this chain: agent-pay deploy adds one"
        if remote:
            return ("exact",), "channels behind --facilitator-url: ask with --schemes exact,channel"
        grace = describe_seconds(manager.grace_period)
        return SCHEMES, f"channel contract {manager.address}, grace period {grace}"
    if "channel" in settings.schemes and remote:
        return settings.schemes, "as asked, on the facilitator's channel contract"
    if "channel" in settings.schemes:
        if manager is None:
            raise ConfigurationError(
                "--schemes channel: no channel contract on this chain; deploy one "
                "(agent-pay deploy --chain URL) or name it (--channel-manager ADDRESS)"
            )
        return settings.schemes, f"channel contract {manager.address}, as asked"
    return settings.schemes, "as asked"


def _close(parts: Assembly) -> None:
    handler = parts.channels
    rounds = len(handler.settler.rounds) if handler is not None else 0
    parts.close()
    if handler is None:
        return
    final = handler.settler.rounds[rounds:]
    claimed = sum(r.claimed for r in final)
    if claimed:
        say(f"channels    claimed {claimed} channel(s) on the way out")
    if any(r.failed_batches for r in final):
        say("warning     some claims failed: they are claimed at the next start")


def facilitator(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings) as chain:
        return _facilitator(args, settings, chain)


def _facilitator(args: argparse.Namespace, settings: Settings, chain: JsonRpcChain) -> int:
    tokens = tokens_on(chain, settings)
    account, who = facilitator_account(settings, chain, dev_index=FACILITATOR_SERVICE_INDEX)
    service = assemble_facilitator(  # channels too, if the chain has a contract: kept here
        chain,
        tokens,
        Transactor(chain, account),
        channel_manager=channel_manager_on(chain, settings),
        channel_options=ChannelOptions(data_dir=settings.home / "facilitator" / CHANNELS_SUBDIR),
    )
    try:
        with serve_app(service.app, settings.facilitator_host, settings.facilitator_port) as url:
            say(f"agent-pay facilitator on {url} (POST /verify, POST /settle, GET /supported)")
            say(f"chain       {chain.chain_id} at {chain.url}; exact on {service.exact.network}")
            if service.channels is not None:
                manager = service.channels.manager.address
                say(f"channels    on {manager} (POST /channels/accept, ...)")
            say("tokens      " + ", ".join(f"{s} {t.address}" for s, t in tokens.items()))
            say(f"gas         paid by {account.address} ({who})")
            _gas_warning(chain, account.address)
            wait_for_shutdown()
    finally:
        service.close()  # the service has stopped: claim the last vouchers
    say("agent-pay facilitator: stopped")
    return 0
