"""The server's write-behind channel store (facilitator.channel.store)."""

from __future__ import annotations

import time
from pathlib import Path

from agent_pay.facilitator.channel.snapshot import restore, snapshot
from agent_pay.facilitator.channel.store import ChannelStore
from tests._channel_parts import _KEYS, P, accept, account

# -- the server's store ------------------------------------------------------------------------


def test_store_writes_behind_and_reloads(tmp_path: Path) -> None:
    store = ChannelStore.open(tmp_path, flush_interval=0.01)
    store.start()
    acct = account()
    accept(acct, P)
    store.mark(acct)
    deadline = time.monotonic() + 5
    while store.writes == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.writes == 1
    accept(acct, 2 * P)
    store.mark(acct)
    store.close()  # flushes what is dirty
    (back,) = ChannelStore.open(tmp_path).load()
    assert snapshot(back) == snapshot(acct)


def test_store_moves_reads_out_of_a_file_of_the_earlier_layout(tmp_path: Path) -> None:
    import sqlite3

    # The layout stores had before `paid_reads`: reads keyed by channel, and a second index.
    with sqlite3.connect(tmp_path / "channels.sqlite") as db:
        db.executescript(
            """
            CREATE TABLE reads (
                channel_id TEXT NOT NULL, cumulative TEXT NOT NULL, payer TEXT NOT NULL,
                resource TEXT NOT NULL, url TEXT NOT NULL, price TEXT NOT NULL, at REAL NOT NULL,
                PRIMARY KEY (channel_id, cumulative)
            ) WITHOUT ROWID;
            CREATE INDEX reads_by_reader ON reads (payer, resource);
            """
        )
        db.execute(
            "INSERT INTO reads VALUES (?, ?, ?, ?, ?, ?, ?)",
            ("0x" + "07" * 32, str(2 * P), _KEYS[0].address, "/a", "http://h/a", str(P), 12.5),
        )
    store = ChannelStore.open(tmp_path)
    try:
        assert store.paid_read(_KEYS[0].address, "/a") == (
            b"\x07" * 32,
            2 * P,
            "http://h/a",
            P,
            12.5,
        )
        assert store.paid_read(_KEYS[0].address, "/b") is None
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "channels.sqlite") as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert "reads" not in tables
    assert "paid_reads" in tables


def test_an_undone_read_leaves_the_store(tmp_path: Path) -> None:
    store = ChannelStore.open(tmp_path)
    acct = account()
    accept(acct, P, resource="/a")
    accept(acct, 2 * P, resource="/b")
    store.mark(acct)
    store.flush()  # both written
    acct.release(2 * P, P)  # /b could not be served after all
    store.mark(acct)
    store.flush()
    try:
        assert store.paid_read(_KEYS[0].address, "/a") is not None
        assert store.paid_read(_KEYS[0].address, "/b") is None
    finally:
        store.close()


def test_store_never_overwrites_a_newer_snapshot(tmp_path: Path) -> None:
    store = ChannelStore.open(tmp_path)
    newer = account()
    for n in range(1, 4):
        accept(newer, n * P)
    older = restore(snapshot(newer))
    older.version = 1
    store.mark(newer)
    store.flush()
    store.mark(older)
    store.flush()
    (back,) = store.load()
    assert back.served == 3 * P
    store.close()
