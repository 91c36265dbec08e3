"""The statements of one checkpoint of the shared channel store (`PostgresChannelStore.flush`),
run in one transaction: renew the leases still this instance's at their epochs, write the
snapshots and paid reads of those channels only (the fence), release those handed over."""

from __future__ import annotations

from typing import Any

from agent_pay.facilitator.channel.book import ChannelAccount, ReadChange
from agent_pay.store.postgres import channel_sql as sql
from agent_pay.store.postgres.connection import Connection
from agent_pay.store.postgres.deadline import IDLE_LIMIT

__all__ = ["Checkpoint", "write_checkpoint"]

Checkpoint = tuple[ChannelAccount, dict[str, Any], str, list[ReadChange]]
"""An account, its snapshot, the snapshot as JSON, its read changes (`snapshot.checkpoint`)."""


def _with(params: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {**params, **more}


def write_checkpoint(
    connection: Connection,
    params: dict[str, Any],
    held: dict[bytes, tuple[ChannelAccount, int]],
    renewing: set[bytes],
    taken: list[Checkpoint],
    wanted: set[bytes],
) -> set[bytes]:
    """The checkpoint's statements, in one transaction; the channels still held."""
    connection.execute(IDLE_LIMIT)
    order = sorted(renewing)  # one lock order for every instance
    renewed = connection.execute(
        sql.RENEW.encode(),
        _with(params, channels=["0x" + c.hex() for c in order], epochs=[held[c][1] for c in order]),
    ).fetchall()
    kept = {bytes.fromhex(row[0][2:]) for row in renewed}
    states = [(s, text) for account, s, text, _ in taken if account.channel_id in kept]
    if states:
        connection.execute(
            sql.WRITE_STATES.encode(),
            _with(
                params,
                channels=[s["channel_id"] for s, _ in states],
                payees=[s["payee"] for s, _ in states],
                statuses=[s["status"] for s, _ in states],
                versions=[s["version"] for s, _ in states],
                states=[text for _, text in states],
            ),
        )
    for account, state, _, changes in taken:
        if account.channel_id in kept and changes:
            _write_reads(params, connection, account, state["channel_id"], changes)
    leaving = sorted(kept & wanted)
    if leaving:
        connection.execute(
            sql.RELEASE.encode(), _with(params, channels=["0x" + c.hex() for c in leaving])
        )
    return kept


def _write_reads(
    params: dict[str, Any],
    connection: Connection,
    account: ChannelAccount,
    channel: str,
    changes: list[Any],
) -> None:
    """One channel's read changes, in order (a read undone after it was added is
    deleted)."""
    added: list[tuple[Any, ...]] = []
    for cumulative, resource, read in changes:
        if read is not None:
            added.append((resource, str(cumulative), read.url, str(read.price), read.at))
            continue
        _add_reads(params, connection, account, channel, added)
        added = []
        connection.execute(
            sql.DROP_READ.encode(),
            (account.payer, resource, params["contract"], channel, cumulative),
        )
    _add_reads(params, connection, account, channel, added)


def _add_reads(
    params: dict[str, Any],
    connection: Connection,
    account: ChannelAccount,
    channel: str,
    rows: list[tuple[Any, ...]],
) -> None:
    if not rows:
        return
    n = len(rows)
    connection.execute(
        sql.ADD_READS.encode(),
        _with(
            params,
            payers=[account.payer] * n,
            resources=[r[0] for r in rows],
            channels=[channel] * n,
            cumulatives=[r[1] for r in rows],
            urls=[r[2] for r in rows],
            prices=[r[3] for r in rows],
            payees=[account.payee] * n,
            tokens=[account.token] * n,
            ats=[r[4] for r in rows],
        ),
    )
