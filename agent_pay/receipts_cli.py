"""`agent-pay receipts` and `agent-pay verify-receipt`, and `serve`'s hidden fault flags.

    agent-pay receipts [--dir DIR] [--payer ADDRESS] [--json]
        what an agent bought: one line per receipt in its receipt store, and one per article
        bought by channel voucher (no receipt: re-reading it returns one)
    agent-pay verify-receipt RECEIPT --signer ADDRESS
        check a receipt offline against the server's published receipt address; RECEIPT is a
        file, "-" for stdin, or the JSON / base64 text itself. Exit 0 valid, 2 invalid.

`register(subparsers)` adds both; `add_fault_flags(parser)` / `fault_plan(args)` give `serve`
the hidden `--fault-kill-at STEP [--fault-nth N]` used by the fault-injection tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

from agent_pay.client.receipts import StoredPurchase, StoredReceipt
from agent_pay.receipts import ReceiptError, list_purchases, list_receipts, verify_receipt
from agent_pay.server.faults import FaultPlan, FaultPoint

__all__ = [
    "DEFAULT_RECEIPTS_DIR",
    "add_fault_flags",
    "fault_plan",
    "receipts_command",
    "register",
    "verify_receipt_command",
]

DEFAULT_RECEIPTS_DIR: Final = Path(".agent-pay/receipts")
"""Where an agent keeps its receipts unless told otherwise (`ReceiptStore.open(dir)`)."""

EXIT_OK: Final = 0
EXIT_INVALID: Final = 2


def receipts_command(args: argparse.Namespace, _settings: object = None) -> int:
    """List the receipts and receipt-less purchases in `args.dir` (only `args.payer`'s if
    given), oldest first."""
    out: TextIO = getattr(args, "out", None) or sys.stdout
    directory = Path(args.dir)
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
        print(f"no receipts in {directory}", file=out)
        return EXIT_OK
    for item in items:
        print(_as_line(item), file=out)
    total = len(stored)
    summary = f"{total} receipt{'s' if total != 1 else ''}"
    if bought:
        summary += f" and {len(bought)} bought without one"
    print(f"{summary} in {directory}", file=out)
    return EXIT_OK


def verify_receipt_command(args: argparse.Namespace, _settings: object = None) -> int:
    """Check one receipt against `args.signer`; print what it proves."""
    out: TextIO = getattr(args, "out", None) or sys.stdout
    source = args.receipt
    if source == "-":
        text = sys.stdin.read()
    elif Path(source).is_file():
        text = Path(source).read_text(encoding="utf-8")
    else:
        text = source
    try:
        receipt = verify_receipt(text, args.signer)
    except ReceiptError as exc:
        print(f"INVALID: {exc.message}", file=out)
        return EXIT_INVALID
    print(f"valid: signed by {receipt.signer}", file=out)
    print(f"  payer        {receipt.payer}", file=out)
    print(
        f"  paid         {receipt.amount} (atomic) of {receipt.asset} on {receipt.network}",
        file=out,
    )
    print(f"  to           {receipt.pay_to}", file=out)
    print(f"  for          {receipt.resource}", file=out)
    print(f"  transaction  {receipt.transaction}", file=out)
    print(f"  issued       {_when(receipt.issued_at)}", file=out)
    return EXIT_OK


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `receipts` and `verify-receipt`; each sets `run(args, settings) -> exit code`."""
    listing = commands.add_parser("receipts", help="list the articles an agent bought")
    listing.add_argument(
        "--dir",
        default=str(DEFAULT_RECEIPTS_DIR),
        help=f"the agent's receipt store ({DEFAULT_RECEIPTS_DIR})",
    )
    listing.add_argument("--payer", help="only this payer's receipts")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(run=receipts_command)

    check = commands.add_parser(
        "verify-receipt", help="check a receipt offline against the server's receipt address"
    )
    check.add_argument("receipt", help='a file, "-" for stdin, or the JSON / base64 itself')
    check.add_argument(
        "--signer",
        required=True,
        help="the server's receiptSigner (from GET /.well-known/agent-pay)",
    )
    check.set_defaults(run=verify_receipt_command)


def add_fault_flags(parser: argparse.ArgumentParser) -> None:
    """`serve`'s hidden fault-injection flags (tests only; not in --help)."""
    parser.add_argument(
        "--fault-kill-at",
        choices=[str(p) for p in FaultPoint],
        default=None,
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--fault-nth", type=int, default=1, help=argparse.SUPPRESS)


def fault_plan(args: argparse.Namespace) -> FaultPlan | None:
    """The plan the hidden flags ask for, or None."""
    point = getattr(args, "fault_kill_at", None)
    if point is None:
        return None
    return FaultPlan(FaultPoint(point), nth=getattr(args, "fault_nth", 1))


def _as_json(item: StoredReceipt | StoredPurchase) -> dict[str, Any]:
    if isinstance(item, StoredPurchase):
        return {
            "url": item.url,
            "storedAt": item.stored_at,
            "receipt": None,
            "payer": item.payer,
            "scheme": item.scheme,
        }
    return {"url": item.url, "storedAt": item.stored_at, "receipt": item.receipt.to_wire()}


def _as_line(item: StoredReceipt | StoredPurchase) -> str:
    if isinstance(item, StoredPurchase):
        how = "by voucher" if item.scheme == "channel" else f"({item.scheme})"
        return (
            f"{_when(int(item.stored_at))}  {'':27}  {item.payer}  {item.url}  "
            f"bought {how}, no receipt (re-read it for one)"
        )
    receipt = item.receipt
    # The receipt states atomic units; the token's decimals are the chain's to say.
    return (
        f"{_when(receipt.issued_at)}  {receipt.amount:>12} of {receipt.asset[:10]}…  "
        f"{receipt.payer}  {item.url}  tx {receipt.transaction[:18]}…"
    )


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
