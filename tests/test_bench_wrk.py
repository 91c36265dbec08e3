"""`agent_pay.bench.wrk`: wrk's figures and its per-status counts, against a tiny ASGI app whose
answers we know (every third request a 402, the rest 200, each carrying the header it got)."""

from __future__ import annotations

import os
import shutil
import threading
from typing import Any

import pytest

from agent_pay.bench.wrk import run_wrk
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
