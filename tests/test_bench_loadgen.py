"""The load generator: counts, statuses, headers it collects, its bounds, and its percentiles."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agent_pay.bench.loadgen import run_load, summarize_latencies
from agent_pay.serving import serve_app


def _app(seen: list[str]) -> FastAPI:
    """An echo server that notes each request's tag in `seen`."""
    app = FastAPI()

    @app.get("/echo")
    async def echo(request: Request) -> JSONResponse:
        tag = request.headers.get("x-tag", "")
        seen.append(tag)
        if tag == "paid":
            headers = {"PAYMENT-RESPONSE": f"receipt-{len(seen)}", "Server-Timing": "verify;dur=2"}
            return JSONResponse({"ok": True}, 200, headers)
        return JSONResponse({"preview": "x" * 100}, 402, {"Server-Timing": "a;dur=1, b;dur=3"})

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    with serve_app(_app(seen)) as url:
        yield f"{url}/echo", seen


@pytest.mark.slow
def test_every_request_is_answered_and_counted(server: tuple[str, list[str]]) -> None:
    url, _ = server
    lanes = [[{}] for _ in range(150)] + [[{"x-tag": "paid"}] for _ in range(50)]
    result = run_load(url, lanes, concurrency=8, max_seconds=30)
    assert result.statuses == {402: 150, 200: 50}
    assert result.completed == len(result.latencies) == 200
    assert result.errors == result.unsent == 0
    assert sorted(result.payment_responses) == sorted(set(result.payment_responses))
    assert len(result.payment_responses) == 50
    assert result.rate > 0
    assert result.seconds > 0
    means = result.server_timing_mean_ms()
    assert means["a"] == pytest.approx(1.0 * 150 / 200)  # mean over answers that carried it
    assert means["verify"] == pytest.approx(2.0 * 50 / 200)
    assert result.server_cpu_seconds is None  # no server process named


@pytest.mark.slow
def test_the_server_processs_cpu_time_is_measured(server: tuple[str, list[str]]) -> None:
    if not os.path.exists("/proc/self/task"):
        pytest.skip("no /proc here")
    url, _ = server  # served by a thread of this process
    result = run_load(url, [[{}]] * 300, concurrency=4, max_seconds=30, server_pid=os.getpid())
    assert result.completed == 300
    assert result.server_cpu_seconds is not None
    # Every answer cost this process some CPU; a handful of milliseconds each at most.
    assert 0 < result.server_cpu_seconds / result.completed < 0.005


@pytest.mark.slow
def test_a_lane_keeps_its_order_on_one_connection(server: tuple[str, list[str]]) -> None:
    url, seen = server
    seen.clear()
    lane = [{"x-tag": f"step-{i}"} for i in range(20)]
    result = run_load(url, [lane], concurrency=4, max_seconds=30)
    assert result.completed == 20
    assert seen == [f"step-{i}" for i in range(20)]


@pytest.mark.slow
def test_the_time_cap_bounds_a_run(server: tuple[str, list[str]]) -> None:
    url, _ = server
    result = run_load(url, [[{}]] * 200_000, concurrency=2, max_seconds=0.3)
    assert result.completed + result.unsent == 200_000
    assert result.unsent > 0


@pytest.mark.slow
def test_a_refused_connection_is_an_error_not_a_hang() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_load(f"http://127.0.0.1:{port}/", [[{}]] * 5, concurrency=1, max_seconds=10)
    assert result.completed == 0
    assert result.errors == 5
    assert result.error_samples


def test_concurrency_must_be_positive() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        run_load("http://127.0.0.1:1/", [[{}]], concurrency=0)


def test_percentiles_are_nearest_rank() -> None:
    samples = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    summary = summarize_latencies(samples)
    assert (summary.p50_ms, summary.p90_ms, summary.p99_ms, summary.max_ms) == pytest.approx(
        (50, 90, 99, 100)
    )
    assert summary.mean_ms == pytest.approx(50.5)
    assert summarize_latencies([0.002]).p99_ms == pytest.approx(2)
    assert summarize_latencies([]).count == 0
