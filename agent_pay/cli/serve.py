"""`agent-pay serve` (the content server) and `agent-pay facilitator` (the facilitator service),
both against any node."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from agent_pay.cli._common import (
    add_chain_flags,
    channel_manager_on,
    connect,
    describe_seconds,
    facilitator_account,
    port_arg,
    positive_int,
    say,
    tokens_on,
    wait_for_shutdown,
)
from agent_pay.errors import ConfigurationError
from agent_pay.receipts_cli import add_fault_flags, fault_plan
from agent_pay.settings import SCHEMES, Settings

if TYPE_CHECKING:  # the server's modules load when it starts, not for `agent-pay --help`
    from agent_pay.chain.channel import ChannelManager
    from agent_pay.chain.rpc import JsonRpcChain
    from agent_pay.stack import Stack

__all__ = ["CHANNELS_SUBDIR", "register"]

CHANNELS_SUBDIR = "channels"
"""Where in `server_dir` the channels paid to this server are kept."""


def _gas_warning(chain: JsonRpcChain, address: str) -> None:
    from agent_pay.assets import format_amount

    balance = chain.get_balance(address)
    if balance < 10**16:
        say(
            f"warning     {address} holds {format_amount(balance, 18)} ETH for settlement gas: "
            f"fund it (agent-pay fund {address} 1 --token ETH)"
        )


def serve(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings) as chain:
        return _serve(args, settings, chain)


def _serve(args: argparse.Namespace, settings: Settings, chain: JsonRpcChain) -> int:
    from agent_pay.assets import AssetRegistry
    from agent_pay.chain.contract import Transactor
    from agent_pay.channel_setup import ChannelOptions
    from agent_pay.facilitator.http import HttpFacilitatorClient
    from agent_pay.server.app import create_app
    from agent_pay.server.catalogue import Catalogue
    from agent_pay.server.ledger import Ledger
    from agent_pay.server.offers import ExactOffers
    from agent_pay.serving import serve_app
    from agent_pay.stack import Stack, sample_articles_dir
    from agent_pay.wallet import server_receipt_key

    tokens = tokens_on(chain, settings)
    manager = channel_manager_on(chain, settings)
    schemes, why = _schemes(settings, manager)
    articles = Catalogue.from_directory(settings.articles or sample_articles_dir())
    ledger = Ledger.open(settings.server_dir)  # one server per data directory: it locks it
    receipt_signer = server_receipt_key(settings)
    faults = fault_plan(args)
    stack: Stack | None = None
    if settings.facilitator_url:
        registry = AssetRegistry(t.asset for t in tokens.values())
        remote = HttpFacilitatorClient(settings.facilitator_url)
        offers = [ExactOffers(registry, max_timeout_seconds=settings.max_timeout_seconds)]
        app = create_app(
            articles,
            registry,
            remote,
            schemes=offers,
            ledger=ledger,
            receipt_signer=receipt_signer,
            faults=faults,
        )
        settles = f"the facilitator at {settings.facilitator_url}"
    else:
        account, who = facilitator_account(settings, chain)
        stack = Stack.connect(
            chain,
            tokens,
            Transactor(chain, account),
            articles=articles,
            max_timeout_seconds=settings.max_timeout_seconds,
            ledger=ledger,
            receipt_signer=receipt_signer,
            faults=faults,
            schemes=schemes,
            channel_manager=manager if "channel" in schemes else None,
            channel_options=ChannelOptions(
                data_dir=settings.server_dir / CHANNELS_SUBDIR,
                max_timeout_seconds=settings.max_timeout_seconds,
            ),
        )
        app = stack.app
        settles = f"itself, gas paid by {account.address} ({who})"
    try:
        with serve_app(app, settings.host, settings.port) as url:
            say(f"agent-pay content server on {url}: {len(articles)} articles (GET /articles)")
            say(f"chain       {chain.chain_id} at {chain.url}")
            say("tokens      " + ", ".join(f"{s} {t.address}" for s, t in tokens.items()))
            say(f"schemes     {', '.join(schemes)} ({why})")
            say(f"settles     through {settles}")
            say(f"ledger      {ledger.path}; receipts signed by {receipt_signer.address}")
            if stack is not None:
                _gas_warning(chain, stack.scheme.signer_address)
            wait_for_shutdown()
            say("stopping    (Ctrl-C or SIGTERM): finishing the requests in flight")
    finally:
        if stack is not None:
            _close(stack)  # the server has stopped: claim the last vouchers
    say("agent-pay serve: stopped")
    return 0


def _schemes(settings: Settings, manager: ChannelManager | None) -> tuple[tuple[str, ...], str]:
    """What to offer, and why."""
    remote = settings.facilitator_url is not None
    if not settings.schemes:
        if manager is None:
            return ("exact",), "no channel contract on this chain: agent-pay deploy adds one"
        if remote:
            return ("exact",), "channels are settled in this process, not by --facilitator-url"
        grace = describe_seconds(manager.grace_period)
        return SCHEMES, f"channel contract {manager.address}, grace period {grace}"
    if "channel" in settings.schemes:
        if manager is None:
            raise ConfigurationError(
                "--schemes channel: no channel contract on this chain; deploy one "
                "(agent-pay deploy --chain URL) or name it (--channel-manager ADDRESS)"
            )
        if remote:
            raise ConfigurationError(
                "--schemes channel settles in this process: drop --facilitator-url, or serve "
                "--schemes exact"
            )
        return settings.schemes, f"channel contract {manager.address}, as asked"
    return settings.schemes, "as asked"


def _close(stack: Stack) -> None:
    handler = stack.channels
    rounds = len(handler.settler.rounds) if handler is not None else 0
    stack.close()
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
    from agent_pay.chain.contract import Transactor
    from agent_pay.facilitator.exact import ExactEvmScheme
    from agent_pay.facilitator.http import create_facilitator_app
    from agent_pay.facilitator.local import LocalFacilitator
    from agent_pay.serving import serve_app

    tokens = tokens_on(chain, settings)
    account, who = facilitator_account(settings, chain)
    scheme = ExactEvmScheme(tokens.values(), Transactor(chain, account))
    app = create_facilitator_app(LocalFacilitator(scheme))
    with serve_app(app, settings.facilitator_host, settings.facilitator_port) as url:
        say(f"agent-pay facilitator on {url} (POST /verify, POST /settle, GET /supported)")
        say(f"chain       {chain.chain_id} at {chain.url}; scheme exact on {scheme.network}")
        say("tokens      " + ", ".join(f"{s} {t.address}" for s, t in tokens.items()))
        say(f"gas         paid by {account.address} ({who})")
        _gas_warning(chain, account.address)
        wait_for_shutdown()
    say("agent-pay facilitator: stopped")
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "serve", help="run the content server against a node (HTTP 402 for paid articles)"
    )
    add_chain_flags(parser)
    parser.add_argument("--host", help="interface to listen on (127.0.0.1)")
    parser.add_argument("--port", type=port_arg, help="port (8402)")
    parser.add_argument("--articles", type=Path, help="directory of articles (the samples)")
    parser.add_argument(
        "--facilitator-url",
        metavar="URL",
        help="settle through this x402 facilitator instead of with our own key",
    )
    parser.add_argument(
        "--max-timeout-seconds",
        type=positive_int,
        help="how long a signed payment stays valid (120)",
    )
    parser.add_argument(
        "--server-dir",
        type=Path,
        help="ledger, receipt key, channels ($AGENT_PAY_HOME/server)",
    )
    parser.add_argument(
        "--schemes",
        metavar="SCHEME,...",
        help="what to offer: exact, channel (default: both if the chain has a channel "
        "contract, else exact; AGENT_PAY_SCHEMES)",
    )
    parser.add_argument(
        "--channel-manager",
        metavar="ADDRESS",
        help="the channel contract (default: the dev-chain address; AGENT_PAY_CHANNEL_MANAGER)",
    )
    add_fault_flags(parser)
    parser.set_defaults(run=serve)

    parser = commands.add_parser(
        "facilitator", help="run an x402 facilitator (verify and settle) against a node"
    )
    add_chain_flags(parser)
    parser.add_argument("--host", dest="facilitator_host", help="interface (127.0.0.1)")
    parser.add_argument("--port", dest="facilitator_port", type=port_arg, help="port (8403)")
    parser.set_defaults(run=facilitator)
