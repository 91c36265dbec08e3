"""`agent_pay.bench.wrk`: wrk's figures and its per-status counts, against a tiny ASGI app whose
answers we know (every third request a 402, the rest 200, each carrying the header it got)."""

from __future__ import annotations

import os
import shutil
import threading
from typing import Any

import pytest

from agent_pay.bench.wrk import run_wrk, run_wrk_lanes
from agent_pay.serving import serve_app

pytestmark = pytest.mark.slow


@pytest.fixture
def wrk() -> None:
    if shutil.which("wrk") is None:
        message = "wrk is not installed (scripts/test installs it with apt-get)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)


class _Counting:
    """Answers 402 to every third request and 200 to the others; counts what it saw."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen = 0
        self.with_header = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        with self.lock:
            self.seen += 1
            status = 402 if self.seen % 3 == 0 else 200
            if (b"x-probe", b"yes") in scope["headers"]:
                self.with_header += 1
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def test_wrk_counts_every_answer_by_status(wrk: None) -> None:
    app = _Counting()
    with serve_app(app) as url:
        result = run_wrk(f"{url}/x", {"X-Probe": "yes"}, concurrency=4, seconds=1)
    assert result.errors == 0
    assert result.completed > 100
    assert sum(result.statuses.values()) == result.completed
    assert set(result.statuses) == {200, 402}
    assert abs(result.statuses[402] - result.completed / 3) <= 4  # one in three, give or take
    # Every request wrk counted reached the app, with the header; the app may have seen a few
    # more (answered after wrk's clock stopped).
    assert result.completed <= app.seen <= result.completed + 4
    assert app.with_header == app.seen
    assert 0 < result.latency.p50_ms <= result.latency.p99_ms <= result.latency.max_ms
    assert result.rate == pytest.approx(result.completed / result.seconds)
    assert 0 < result.cpu_seconds < 2 * result.seconds


def test_wrk_without_a_server_is_an_error_not_figures(wrk: None) -> None:
    from agent_pay.node.anvil import free_port

    with pytest.raises(RuntimeError, match="wrk"):
        run_wrk(f"http://127.0.0.1:{free_port()}/", {}, concurrency=1, seconds=1)


class _Recording:
    """Answers 200, recording each connection's `X-Seq` headers in the order they came."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_connection: dict[tuple[str, int], list[str]] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        value = dict(scope["headers"]).get(b"x-seq", b"").decode()
        with self.lock:
            self.by_connection.setdefault(tuple(scope["client"]), []).append(value)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def test_each_lane_is_sent_in_order_on_its_own_connection(wrk: None) -> None:
    lanes = [[{"X-Seq": f"{lane}-{i}"} for i in range(100_000)] for lane in range(3)]
    app = _Recording()
    with serve_app(app) as url:
        result = run_wrk_lanes(f"{url}/", lanes, seconds=1)
    assert result.exhausted == 0
    assert result.completed > 100
    assert result.statuses == {200: result.completed}
    sequences = list(app.by_connection.values())
    assert len(sequences) == 3
    assert sorted(seq[0] for seq in sequences) == ["0-0", "1-0", "2-0"]
    for seq in sequences:
        lane = seq[0].split("-")[0]
        assert seq == [f"{lane}-{i}" for i in range(len(seq))]  # in order, none skipped


def test_a_lane_that_runs_out_is_counted(wrk: None) -> None:
    lanes = [[{"X-Seq": f"{lane}-{i}"} for i in range(5)] for lane in range(2)]
    app = _Recording()
    with serve_app(app) as url:
        result = run_wrk_lanes(f"{url}/", lanes, seconds=1)
    assert result.exhausted == 2
    sequences = sorted(app.by_connection.values())
    # Each lane in order, once; what wrk sends after a lane ran out carries no lane's header.
    assert [[v for v in seq if v] for seq in sequences] == [
        [f"{lane}-{i}" for i in range(5)] for lane in range(2)
    ]
