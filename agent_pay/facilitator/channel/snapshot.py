"""A channel account's persisted form: its snapshot (JSON-ready values), the checkpoint the store
writes (the snapshot and the paid-read changes, taken together), and the account restored."""

from __future__ import annotations

from typing import Any

from agent_pay.chain.channel import ChannelStatus
from agent_pay.facilitator.channel.book import ChannelAccount
from agent_pay.facilitator.channel.records import (
    ReadChange,
    Recent,
    recent_entry,
    recent_wire,
    to_json,
)

__all__ = ["checkpoint", "restore", "snapshot"]


def snapshot(account: ChannelAccount) -> dict[str, Any]:
    """The state of `account` to persist, as JSON-ready values (takes its lock)."""
    with account.lock:
        return _state(account)


def checkpoint(account: ChannelAccount) -> tuple[dict[str, Any], str, list[ReadChange]]:
    """`snapshot(account)` and the paid-read changes since the last checkpoint, taken together
    (under the lock): every read the snapshot counts as served is in these changes or in
    earlier ones. The store writes both in one transaction, then calls `account.written`.

    Returns the snapshot without `recent`, the whole snapshot as compact JSON (the same as
    `json.dumps(snapshot(account))`, up to key order), and the changes. Each recent voucher is
    encoded once and kept encoded: a channel with its 64 recent vouchers encoded afresh cost
    75 us per write, which a channel read about once per write paid on every read."""
    with account.lock:
        changes = account.take_changes()
        state = _state(account, with_recent=False)
        recent = _recent_json(account)
    text = f'{to_json(state)[:-1]},"recent":{recent}}}'
    return state, text, changes


def restore(data: dict[str, Any]) -> ChannelAccount:
    """The inverse of `snapshot`."""
    account = ChannelAccount(
        bytes.fromhex(data["channel_id"][2:]),
        data["payer"],
        data["payee"],
        data["token"],
        data["signer"],
        int(data["deposit"]),
        int(data["claimed"]),
        ChannelStatus(data["status"]),
        int(data["closes_at"]),
        int(data["highest"]),
        bytes.fromhex(data["signature"][2:]),
        int(data["served"]),
        [[int(a), int(b)] for a, b in data["unpaid"]],
        int(data["forfeited"]),
        bool(data["stopping"]),
        int(data["version"]),
    )
    account.recent = {
        int(c): Recent(bytes.fromhex(sig[2:]), resource, float(at), int(price))
        for c, sig, resource, at, price in data["recent"]
    }
    return account


def _recent_json(account: ChannelAccount) -> str:
    entries = []
    for cumulative, recent in account.recent.items():
        if not recent.wire:
            recent.wire = recent_wire(cumulative, recent)
        entries.append(recent.wire)
    return f"[{','.join(entries)}]"


def _state(account: ChannelAccount, *, with_recent: bool = True) -> dict[str, Any]:
    state = {
        "channel_id": "0x" + account.channel_id.hex(),
        "payer": account.payer,
        "payee": account.payee,
        "token": account.token,
        "signer": account.signer,
        "deposit": str(account.deposit),
        "claimed": str(account.claimed),
        "status": int(account.status),
        "closes_at": account.closes_at,
        "highest": str(account.highest),
        "signature": "0x" + account.signature.hex(),
        "served": str(account.served),
        "unpaid": [[str(a), str(b)] for a, b in account.unpaid],
        "forfeited": str(account.forfeited),
        "stopping": account.stopping,
        "version": account.version,
    }
    if with_recent:
        state["recent"] = [recent_entry(c, r) for c, r in account.recent.items()]
    return state
