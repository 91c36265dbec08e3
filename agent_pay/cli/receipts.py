"""`agent-pay receipts` and `agent-pay verify-receipt`, and `serve`'s hidden fault flags.

    agent-pay receipts [--dir DIR] [--payer ADDRESS] [--json]
        what an agent bought: one line per receipt in its receipt store, and one per article
        bought by channel voucher (no receipt: re-reading it returns one)
    agent-pay verify-receipt RECEIPT --signer ADDRESS
        check a receipt offline against the server's published receipt address; RECEIPT is a
        file, "-" for stdin, or the JSON / base64 text itself; a list (`receipts --json`) is
        checked entry by entry. Exit 0 valid, 2 invalid (or a usage error), 1 unreadable.

Amounts are shown in the token's units ("0.1 USDX") when the node at `chain_url` knows the
token; otherwise in atomic units, with the token's full address.

`register(subparsers)` adds both; `add_fault_flags(parser)` / `fault_plan(args)` give `serve`
the hidden `--fault-kill-at STEP [--fault-nth N]` used by the fault-injection tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

from agent_pay.errors import ConfigurationError

if TYPE_CHECKING:
    from agent_pay.cli._tokens import TokenNames
    from agent_pay.client.receipts import StoredPurchase, StoredReceipt
    from agent_pay.protocol.extensions import SignedReceipt
    from agent_pay.server.faults import FaultPlan
    from agent_pay.settings import Settings

__all__ = [
    "DEFAULT_RECEIPTS_DIR",
    "add_fault_flags",
    "fault_plan",
    "receipts_command",
    "register",
    "verify_receipt_command",
]

DEFAULT_RECEIPTS_DIR: Final = "$AGENT_PAY_HOME/receipts"
"""Where an agent keeps its receipts unless told otherwise (`Settings.receipts_dir`)."""

EXIT_OK: Final = 0
EXIT_INVALID: Final = 2


def _names(settings: Settings | None) -> TokenNames:
    from agent_pay.cli._tokens import TokenNames

    return TokenNames(settings.chain_url if settings is not None else None)


def receipts_command(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """List the receipts and receipt-less purchases in `args.dir` (else the settings'
    `receipts_dir`; only `args.payer`'s if given), oldest first."""
    from agent_pay.receipts import list_purchases, list_receipts

    out: TextIO = getattr(args, "out", None) or sys.stdout
    if args.dir is not None:
        directory = Path(args.dir)
    elif settings is not None:
        directory = settings.receipts_dir
    else:
        raise ConfigurationError("receipts: no --dir and no settings")
    if not directory.is_dir():
        print(f"no receipts in {directory} (nothing bought yet)", file=out)
        return EXIT_OK
    stored = list_receipts(directory, args.payer)
    bought = list_purchases(directory, args.payer)
    items: list[StoredReceipt | StoredPurchase] = sorted(
        [*stored, *bought], key=lambda item: item.stored_at
    )
    if args.json:
        json.dump([_as_json(item) for item in items], out, indent=2)
        print(file=out)
        return EXIT_OK
    if not items:
        whose = f" for {args.payer}" if args.payer else ""
        print(f"no receipts{whose} in {directory}", file=out)
        return EXIT_OK
    with _names(settings) as names:
        for item in items:
            print(_as_line(item, names), file=out)
    total = len(stored)
    summary = f"{total} receipt{'s' if total != 1 else ''}"
    if bought:
        summary += f" and {len(bought)} bought without one"
    print(f"{summary} in {directory}", file=out)
    return EXIT_OK


def _receipt_text(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    path = Path(source)
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read {source}: {exc}") from None
    if path.is_dir():
        raise ConfigurationError(f"{source} is a directory, not a receipt")
    if not source.lstrip().startswith(("{", "[", "ey")):  # JSON, or base64 of a JSON object
        raise ConfigurationError(
            f"no such file: {source} (give a file, - for stdin, or the receipt's JSON)"
        )
    return source


def verify_receipt_command(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """Check one receipt, or each in a `receipts --json` list, against `args.signer`; print
    what each proves."""
    from agent_pay.receipts import ReceiptError, verify_receipt

    out: TextIO = getattr(args, "out", None) or sys.stdout
    text = _receipt_text(args.receipt)
    try:
        document: Any = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, list):  # `agent-pay receipts --json`
        entries = [e for e in document if not (isinstance(e, dict) and e.get("receipt") is None)]
        if not entries:
            print("INVALID: no receipts in the list (reads paid by voucher carry none)", file=out)
            return EXIT_INVALID
    else:
        entries = [text]
    invalid = 0
    with _names(settings) as names:
        for index, entry in enumerate(entries):
            if index:
                print(file=out)
            try:
                receipt = verify_receipt(entry, args.signer)
            except ReceiptError as exc:
                where = entry.get("url") if isinstance(entry, dict) else None
                print(f"INVALID: {exc.message}" + (f" ({where})" if where else ""), file=out)
                invalid += 1
                continue
            _describe_receipt(receipt, names, out)
    if len(entries) > 1:
        print(f"\n{len(entries) - invalid} of {len(entries)} receipts valid", file=out)
    return EXIT_INVALID if invalid else EXIT_OK


def _describe_receipt(receipt: SignedReceipt, names: TokenNames, out: TextIO) -> None:
    print(f"valid: signed by {receipt.signer}", file=out)
    print(f"  payer        {receipt.payer}", file=out)
    paid = names.format(receipt.amount, receipt.network, receipt.asset)
    print(f"  paid         {paid}", file=out)
    print(f"  to           {receipt.pay_to}", file=out)
    print(f"  for          {receipt.resource}", file=out)
    print(f"  transaction  {receipt.transaction}", file=out)
    print(f"  issued       {_when(receipt.issued_at)}", file=out)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `receipts` and `verify-receipt`; each sets `run(args, settings) -> exit code`."""
    from agent_pay.cli._common import address_arg  # here: the CLI package imports this module

    listing = commands.add_parser("receipts", help="list the articles an agent bought")
    listing.add_argument(
        "--dir",
        "--receipts-dir",
        dest="dir",
        help=f"the agent's receipt store ({DEFAULT_RECEIPTS_DIR}; AGENT_PAY_RECEIPTS_DIR)",
    )
    listing.add_argument("--payer", type=address_arg, help="only this payer's receipts")
    listing.add_argument(
        "--chain",
        dest="chain_url",
        metavar="URL",
        help="the node that names the tokens, to show amounts in their units",
    )
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(run=receipts_command)

    check = commands.add_parser(
        "verify-receipt", help="check a receipt offline against the server's receipt address"
    )
    check.add_argument(
        "receipt",
        help='a file, "-" for stdin (`agent-pay receipts --json | agent-pay verify-receipt - '
        "...`), or the JSON / base64 itself",
    )
    check.add_argument(
        "--signer",
        required=True,
        type=address_arg,
        help="the server's receiptSigner (from GET /.well-known/agent-pay)",
    )
    check.add_argument(
        "--chain",
        dest="chain_url",
        metavar="URL",
        help="the node that names the tokens, to show amounts in their units",
    )
    check.set_defaults(run=verify_receipt_command)


def add_fault_flags(parser: argparse.ArgumentParser) -> None:
    """`serve`'s hidden fault-injection flags (tests only; not in --help)."""
    from agent_pay.server.faults import FaultPoint  # stdlib only: cheap

    parser.add_argument(
        "--fault-kill-at",
        choices=[str(p) for p in FaultPoint],
        default=None,
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--fault-nth", type=int, default=1, help=argparse.SUPPRESS)


def fault_plan(args: argparse.Namespace) -> FaultPlan | None:
    """The plan the hidden flags ask for, or None."""
    from agent_pay.server.faults import FaultPlan, FaultPoint

    point = getattr(args, "fault_kill_at", None)
    if point is None:
        return None
    return FaultPlan(FaultPoint(point), nth=getattr(args, "fault_nth", 1))


def _as_json(item: StoredReceipt | StoredPurchase) -> dict[str, Any]:
    from agent_pay.client.receipts import StoredPurchase

    if isinstance(item, StoredPurchase):
        return {
            "url": item.url,
            "storedAt": item.stored_at,
            "receipt": None,
            "payer": item.payer,
            "scheme": item.scheme,
        }
    return {"url": item.url, "storedAt": item.stored_at, "receipt": item.receipt.to_wire()}


def _as_line(item: StoredReceipt | StoredPurchase, names: TokenNames) -> str:
    from agent_pay.client.receipts import StoredPurchase

    if isinstance(item, StoredPurchase):
        how = "by voucher" if item.scheme == "channel" else f"({item.scheme})"
        return (
            f"{_when(int(item.stored_at))}  {item.url}  bought {how}, no receipt "
            f"(re-read it for one); payer {item.payer}"
        )
    receipt = item.receipt
    # The receipt states atomic units; the token's decimals are the chain's to say.
    paid = names.format(receipt.amount, receipt.network, receipt.asset)
    return (
        f"{_when(receipt.issued_at)}  {item.url}  {paid}; payer {receipt.payer}; "
        f"tx {receipt.transaction}"
    )


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
