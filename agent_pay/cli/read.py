"""`agent-pay read URL`: pay for a resource within a spending policy and print it.

What a payment may cost is the user's to say (`--max-price`, `--budget`), in tokens the user
names. The server's offer names a token by address and network only, and a server could lie
about anything else, so each token's decimals come from the chain (`--chain`, a node the user
trusts) for the tokens in the user's token list, never from the offer: a price cap read with
the wrong decimals could be off by a factor of 10^12.

With `--channel-deposit AMOUNT`, `read` pays by payment channel where the server offers one:
the first read from a payee deposits AMOUNT (gasless: the server submits the signed deposit),
later reads from that payee, in this run or a later one, sign one voucher each and send no
transaction. The channels are kept in `channels_dir`; what a deposit has not yet paid for counts
against `--budget` until the channel is closed (`agent-pay channels close|withdraw`).

Each URL is read in turn; one that fails (refused, over the policy, not found, the server down)
is reported on one line with the server's reason, and the others are still read. The exit code
is the worst: 2 if any payment was refused, else 1 if any read failed, else 0.

`--budget` is what this key may spend in all, across runs: what was spent (and what is signed
but not yet confirmed) is kept in `receipts_dir`, next to the receipts, and checked in one
transaction before anything is signed, so two `read`s at once cannot overspend it either.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_pay.cli._common import (
    UsageError,
    add_chain_flags,
    amount_arg,
    connect,
    positive_float,
    say,
    tokens_on,
)
from agent_pay.settings import Settings

if TYPE_CHECKING:
    import httpx

    from agent_pay.chain.rpc import JsonRpcChain
    from agent_pay.chain.stablecoin import Stablecoin
    from agent_pay.client.auth import PaymentAuth, PaymentRecord
    from agent_pay.client.channels import ChannelClientScheme
    from agent_pay.client.policy import Spending, SpendingPolicy
    from agent_pay.client.receipts import ReceiptStore
    from agent_pay.signing import Signer

__all__ = ["Payer", "payer", "register", "require_limits"]

EXIT_REFUSED = 2


def _ask(prompt: str) -> str:
    return getpass.getpass(prompt)


def _content(response: httpx.Response) -> str:
    """An agent-pay article's text; anything else as the server sent it."""
    if response.headers.get("content-type", "").startswith("application/json"):
        try:
            body = response.json()
        except ValueError:
            return response.text
        if isinstance(body, dict) and isinstance(body.get("content"), str):
            title = body.get("title")
            return f"# {title}\n\n{body['content']}" if title else body["content"]
        return json.dumps(body, indent=2)
    return response.text


def _refusal(response: httpx.Response) -> str:
    """Why a server said no: the reason in its body, its 402 challenge, or `Retry-After`."""
    from agent_pay.protocol import PaymentRequired
    from agent_pay.protocol.codec import PAYMENT_REQUIRED_HEADER, decode_header

    reason = ""
    header = response.headers.get(PAYMENT_REQUIRED_HEADER)
    if header:
        try:
            reason = decode_header(header, PaymentRequired).error or ""
        except Exception:  # an unreadable challenge: say what we can
            reason = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    message = ""
    if isinstance(body, dict):
        message = body.get("message") or body.get("detail") or body.get("error") or ""
        if body.get("reason") and body.get("reason") != message:
            message = f"{message} [{body['reason']}]" if message else str(body["reason"])
    elif response.text.strip() and len(response.text) < 200:
        message = response.text.strip()
    retry = response.headers.get("retry-after")
    later = f"retry after {retry} s" if retry else ""
    parts = [str(message), reason if reason != message else "", later]
    return "; ".join(filter(None, parts)) or "no reason given"


def run(args: argparse.Namespace, settings: Settings) -> int:
    _, budget = require_limits(settings)  # before connecting: the user's mistake first
    if settings.channel_deposit is not None and settings.channel_deposit > budget:
        raise UsageError(
            f"--channel-deposit {settings.channel_deposit} is more than --budget "
            f"{budget}: no channel could open (lower the deposit or raise the budget)"
        )
    with connect(settings) as chain:
        return _run(args, settings, chain)


def require_limits(settings: Settings) -> tuple[Decimal, Decimal]:
    """(max_price, budget), which the user must give: there is no default for money."""
    if settings.max_price is None or settings.budget is None:
        raise UsageError(
            "say what you will pay: --max-price (per resource) and --budget (in all), "
            "or AGENT_PAY_MAX_PRICE / AGENT_PAY_BUDGET"
        )
    return settings.max_price, settings.budget


@dataclass(frozen=True)
class Payer:
    """Who pays and within what: the key, the tokens the user named (by symbol), the policy,
    the budget's tally and the receipts, both kept under `receipts_dir` across runs."""

    signer: Signer
    tokens: dict[str, Stablecoin]  # every token found on the chain
    chosen: list[str]
    policy: SpendingPolicy
    spending: Spending
    receipts: ReceiptStore


def payer(settings: Settings, chain: JsonRpcChain, token_symbols: list[str] | None) -> Payer:
    """The key (keystore or AGENT_PAY_PRIVATE_KEY), the policy from `max_price`/`budget` over
    `token_symbols` (default: every known token), and the stores that keep what was spent and
    bought. Used by `read` and `mcp`."""
    from agent_pay.client.policy import Spending, SpendingPolicy
    from agent_pay.client.receipts import ReceiptStore
    from agent_pay.wallet import signer_from_settings

    max_price, budget = require_limits(settings)
    signer = signer_from_settings(settings, _ask if sys.stdin.isatty() else None)
    tokens = tokens_on(chain, settings)
    chosen = token_symbols or list(tokens)
    unknown = [s for s in chosen if s not in tokens]
    if unknown:
        raise UsageError(f"unknown token(s) {', '.join(unknown)}; known: {', '.join(tokens)}")
    policy = SpendingPolicy.per_token(
        [tokens[s].asset for s in chosen], max_per_payment=max_price, budget=budget
    )
    # The budget holds across runs: what was spent is kept next to the receipts.
    spending = Spending.open(policy, settings.receipts_dir, signer.address)
    receipts = ReceiptStore.open(settings.receipts_dir)  # re-reads of bought articles are free
    return Payer(signer, tokens, chosen, policy, spending, receipts)


def _run(args: argparse.Namespace, settings: Settings, chain: JsonRpcChain) -> int:
    import httpx

    from agent_pay.errors import NoAcceptableOfferError, PolicyViolationError

    who = payer(settings, chain, args.token)
    signer, tokens, chosen, receipts = who.signer, who.tokens, who.chosen, who.receipts
    assets = {t.asset.key: t.asset for t in tokens.values()}
    paid: list[PaymentRecord] = []
    policy = who.spending if settings.channel_deposit is None else who.policy
    auth, channels = _auth(settings, signer, policy, [tokens[s] for s in chosen], paid, receipts)
    refused = failed = 0
    with httpx.Client(auth=auth, timeout=args.timeout) as http:
        for url in args.urls:
            before = len(paid)
            try:
                response = http.get(url)
            except (PolicyViolationError, NoAcceptableOfferError) as exc:
                why = exc.message + _locked_note(exc.message, channels, assets)
                say(f"agent-pay read: not paying for {url}: {why}", sys.stderr)
                refused += 1
                continue
            except httpx.HTTPError as exc:
                say(f"agent-pay read: cannot fetch {url}: {_http_error(exc)}", sys.stderr)
                failed += 1
                continue
            if response.status_code == 402:
                say(
                    f"agent-pay read: {url} refused the payment: {_refusal(response)} "
                    f"(nothing was charged)",
                    sys.stderr,
                )
                refused += 1
                continue
            if response.status_code >= 400:
                say(
                    f"agent-pay read: {url} answered HTTP {response.status_code} "
                    f"{response.reason_phrase}: {_refusal(response)}",
                    sys.stderr,
                )
                failed += 1
                continue
            for record in paid[before:]:
                asset = assets.get((record.offer.network, record.offer.asset))
                price = asset.format(record.offer.amount) if asset else str(record.offer.amount)
                payee = record.offer.pay_to
                say(
                    f"agent-pay read: paid {price} to {payee} {_how(record, channels)}",
                    sys.stderr,
                )
            if len(paid) == before:
                say(f"agent-pay read: {url} was free", sys.stderr)
            say(_content(response))
    if refused or failed:
        total = len(args.urls)
        if total > 1:
            done = total - refused - failed
            say(
                f"agent-pay read: read {done} of {total} URLs ({refused} refused, {failed} failed)",
                sys.stderr,
            )
        return EXIT_REFUSED if refused else 1
    return 0


def _http_error(exc: httpx.HTTPError) -> str:
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return "timed out (--timeout SECONDS to wait longer)"
    if isinstance(exc, httpx.ConnectError):
        return f"nothing answers there ({exc}); is `agent-pay serve` running?"
    return str(exc) or type(exc).__name__


def _locked_note(
    message: str, channels: ChannelClientScheme | None, assets: dict[tuple[str, str], Any]
) -> str:
    """Where the budget went, when a payment exceeds what is left of it."""
    if channels is None or "remaining budget" not in message:
        return ""
    held = [(key, channels.spending.locked(key)) for key in assets]
    locked = [assets[key].format(amount) for key, amount in held if amount > 0]
    if not locked:
        return ""
    return (
        f" ({', '.join(locked)} of the budget is locked in channel deposits until they are "
        f"closed: agent-pay channels list)"
    )


def _auth(
    settings: Settings,
    signer: Signer,
    policy: SpendingPolicy | Spending,
    tokens: list[Stablecoin],
    paid: list[PaymentRecord],
    receipts: ReceiptStore,
) -> tuple[PaymentAuth, ChannelClientScheme | None]:
    """Pays "exact"; with a channel deposit, by channel first (its own tally, which counts the
    deposits kept in `channels_dir`)."""
    from agent_pay.client.auth import PaymentAuth
    from agent_pay.client.channel_store import ClientChannelStore
    from agent_pay.client.channels import ChannelClientScheme, ChannelPolicy
    from agent_pay.client.policy import SpendingPolicy

    if settings.channel_deposit is None:
        return PaymentAuth(signer, policy, on_payment=paid.append, receipts=receipts), None
    deposits = {}
    for token in tokens:
        try:
            deposits[token.address] = token.asset.parse(settings.channel_deposit)
        except ValueError as exc:
            raise UsageError(f"--channel-deposit: {exc}") from None
    assert isinstance(policy, SpendingPolicy)
    channels = ChannelClientScheme(
        signer,
        policy,
        ClientChannelStore(settings.channels_dir),
        # The user asked for channels: open one on the first read from a payee.
        ChannelPolicy(min_expected_reads=1, deposits=deposits),
    )
    return channels.payment_auth(on_payment=paid.append, receipts=receipts), channels


def _how(record: PaymentRecord, channels: ChannelClientScheme | None) -> str:
    """How a payment was made: a transaction, or a voucher on a channel."""
    from agent_pay.protocol.channel import CHANNEL_EXTENSION, CHANNEL_SCHEME

    offer = record.offer
    if channels is not None and offer.scheme != CHANNEL_SCHEME:
        return (
            f"(tx {record.transaction}; exact, not by channel: the server offers none, or a "
            f"deposit does not fit the budget left or the server's minimum)"
        )
    if offer.scheme != CHANNEL_SCHEME or channels is None:
        return f"(tx {record.transaction})"
    statement = (record.settlement.extensions or {}).get(CHANNEL_EXTENSION) or {}
    channel = statement.get("channelId")
    if channel is None:  # the answer to an opening read names no channel: ours has the key
        key = (offer.network, offer.extra.get("channelManager"), offer.pay_to, offer.asset)
        mine = [r for r in channels.channels() if r.key == key]
        channel = max(mine, key=lambda r: r.created_at).channel_id if mine else "?"
    if record.transaction:
        return f"(voucher on channel {channel}, opened by deposit tx {record.transaction})"
    return f"(voucher on channel {channel}, no transaction)"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "read", help="pay for and print articles (x402), within a spending policy"
    )
    parser.add_argument("urls", nargs="+", metavar="URL", help="what to read")
    parser.add_argument(
        "--max-price",
        type=amount_arg,
        help="most to pay for one URL, in token units (AGENT_PAY_MAX_PRICE)",
    )
    parser.add_argument(
        "--budget", type=amount_arg, help="most to pay in all, per token (AGENT_PAY_BUDGET)"
    )
    parser.add_argument(
        "--token",
        action="append",
        metavar="SYMBOL",
        help="pay only in this token (repeatable; default: any known one)",
    )
    parser.add_argument(
        "--keystore", type=Path, help="the wallet to pay from ($AGENT_PAY_HOME/wallet.json)"
    )
    parser.add_argument(
        "--receipts-dir",
        type=Path,
        help="receipts of what was bought, for free re-reads ($AGENT_PAY_HOME/receipts)",
    )
    parser.add_argument(
        "--channel-deposit",
        metavar="AMOUNT",
        type=amount_arg,
        help="pay by payment channel where offered, depositing AMOUNT (token units) with a "
        "payee on the first read; it counts against --budget until closed (default: exact)",
    )
    parser.add_argument(
        "--channels-dir",
        type=Path,
        help="where the payment channels are kept ($AGENT_PAY_HOME/channels)",
    )
    parser.add_argument(
        "--timeout", type=positive_float, default=60.0, help="seconds per request (60)"
    )
    add_chain_flags(parser)
    parser.set_defaults(run=run)
