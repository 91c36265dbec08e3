"""`agent-pay bench` end to end, with tiny counts: every figure present, and figures consistent."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
from typing import Any

import pytest

from agent_pay.bench import cli, figures
from agent_pay.bench.loadgen import read_cpu_seconds
from agent_pay.bench.progress import Progress
from agent_pay.bench.run import BenchConfig, run_bench
from agent_pay.bench.schemes import (
    SchemeUnavailableError,
    build_stack,
    expand_schemes,
    scheme_kit,
    unavailable_reason,
)
from agent_pay.bench.server import read_memory
from agent_pay.bench.text import render_bench

HAVE_X402 = importlib.util.find_spec("x402") is not None

TINY = BenchConfig(
    schemes=("channel", "exact"),
    reads_per_channel=8,
    free_requests=120,
    paid_requests=16,
    unloaded_requests=4,
    warmup_requests=10,
    concurrency=4,
    agents=4,
    phase_seconds=30,
    mining_batch=12,
    mining_singles=3,
    stock=HAVE_X402,
    stock_requests=8,
)

PHASE_KEYS = {
    "requests",
    "completed",
    "errors",
    "unsent",
    "concurrency",
    "seconds",
    "reads_per_second",
    "latency_ms",
    "statuses",
    "server_timing_ms",
    "server_cpu_us_per_read",
    "chain_cpu_us_per_read",
}
PAID_KEYS = PHASE_KEYS | {
    "signing_per_second",
    "paid_reads",
    "settlement_transactions",
    "settlements_succeeded",
    "settlements_per_second",
    "blocks",
    "settlements_per_block",
    "chain_transactions",
    "chain_gas",
    "gas_per_read",
    "settlement_gas",
    "author_earned_atomic",
    "price_atomic",
}


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return run_bench(TINY, Progress(enabled=False))


@pytest.mark.slow
def test_every_figure_is_reported(report: dict[str, Any]) -> None:
    assert set(report["phases"]["free"]) >= PHASE_KEYS
    assert set(report["phases"]["paid_exact"]) >= PAID_KEYS
    assert set(report["unloaded"]["paid_exact"]) >= PAID_KEYS
    assert set(report["unloaded"]["free"]) >= PHASE_KEYS
    for key in ("p50_ms", "p99_ms", "mean_ms", "max_ms"):
        assert report["phases"]["paid_exact"]["latency_ms"][key] > 0
    assert set(report["mining"]) >= {"batch_tx_per_second", "one_per_block_tx_per_second"}
    assert set(report["step_costs_ms"]) >= {"recover_signer", "read_balance"}
    assert all(ms > 0 for ms in report["step_costs_ms"].values())
    assert report["memory"]["rss_mib"]["idle"] > 0
    assert report["memory"]["peak_mib"] >= report["memory"]["rss_mib"]["idle"]
    assert set(report["ratios"]) >= {"paid_exact_over_free", "channel_over_exact"}
    assert report["machine"]["cpus"] >= 1
    assert report["schemes"]["exact"] == {"status": "ran"}
    assert json.loads(json.dumps(report)) == report  # machine-readable as it stands


@pytest.mark.slow
def test_the_same_run_measures_the_chain_in_its_own_process_and_in_the_servers(
    report: dict[str, Any],
) -> None:
    assert report["chain"] == "process"
    assert report["phases"]["paid_exact"]["chain_cpu_us_per_read"] > 0
    other = report["other_chain"]
    assert other["chain"] == "embedded"
    assert set(other["paid"]) >= PAID_KEYS
    assert other["paid"]["paid_reads"] == TINY.paid_requests
    assert other["paid"]["chain_cpu_us_per_read"] is None  # no process of its own to measure
    assert other["unloaded_paid"]["paid_reads"] == TINY.unloaded_requests
    assert report["checks"]["paid_exact_(chain_embedded): one settlement transaction per paid read"]
    assert report["ratios"]["exact_process_over_embedded_chain"] == pytest.approx(
        report["phases"]["paid_exact"]["reads_per_second"] / other["paid"]["reads_per_second"],
        rel=0.01,
    )
    assert "chain embedded" in render_bench(report)


@pytest.mark.slow
def test_figures_are_consistent(report: dict[str, Any]) -> None:
    assert all(report["checks"].values()), report["checks"]
    free = report["phases"]["free"]
    assert free["statuses"] == {"402": TINY.free_requests}
    paid = report["phases"]["paid_exact"]
    assert paid["paid_reads"] == TINY.paid_requests
    assert paid["settlement_transactions"] == paid["settlements_succeeded"] == paid["paid_reads"]
    assert paid["chain_transactions"] == paid["settlement_transactions"]
    assert paid["author_earned_atomic"] == paid["paid_reads"] * paid["price_atomic"]
    assert 60_000 < paid["gas_per_read"] < 90_000  # one transferWithAuthorization per read
    assert paid["blocks_with_settlements"] <= paid["blocks"]
    assert paid["reads_per_second"] == pytest.approx(paid["completed"] / paid["seconds"], rel=0.01)
    ratios = report["ratios"]
    assert ratios["paid_exact_over_free"] == pytest.approx(
        paid["reads_per_second"] / free["reads_per_second"], rel=0.01
    )
    assert report["mining"]["batch_size"] == TINY.mining_batch
    if os.path.exists("/proc/self/task"):
        # The server process spends CPU on every read; a free preview costs it some 20-1000 us.
        assert 10 < free["server_cpu_us_per_read"] < 5_000
        assert paid["server_cpu_us_per_read"] > 0


@pytest.mark.slow
def test_channel_reads_amortize_their_deposit(report: dict[str, Any]) -> None:
    channel = report["phases"]["paid_channel"]
    assert channel["paid_reads"] == TINY.paid_requests
    assert channel["payers"] == TINY.paid_requests // TINY.reads_per_channel
    # Opening deposits and claims only: no transaction per read.
    assert 0 < channel["chain_transactions"] < channel["paid_reads"]
    assert 0 < channel["gas_per_read"] < report["phases"]["paid_exact"]["gas_per_read"]
    assert report["ratios"]["channel_over_exact"] is not None
    targets = [t for t in report["targets"] if "channel" in t["target"]]
    assert all(t["value"] is not None for t in targets)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_X402, reason="the x402 package is not installed")
def test_stock_x402_runs_beside_ours(report: dict[str, Any]) -> None:
    stock = report["stock_x402"]
    assert stock["status"] == "ran"
    assert stock["paid"]["paid_reads"] == TINY.stock_requests
    assert stock["paid"]["settlement_transactions"] == TINY.stock_requests
    assert report["ratios"]["exact_over_stock_x402"] is not None


@pytest.mark.slow
def test_exact_targets_compare_with_the_same_runs_mining(report: dict[str, Any]) -> None:
    targets = {t["target"]: t for t in report["targets"]}
    of_mining = targets["exact paid reads/s >= 0.8 x group-commit mining rate (same run)"]
    expected = (
        report["phases"]["paid_exact"]["reads_per_second"]
        / (report["mining"]["batch_tx_per_second"])
    )
    assert of_mining["value"] == pytest.approx(expected, rel=1e-3)
    cpu = targets["server CPU per exact read <= 2 x the chain's CPU per settlement"]
    assert cpu["value"] is not None
    assert cpu["value"] > 0
    latency = targets["p50/p99 of an exact read under load next to unloaded"]["value"]
    assert set(latency) == {"under load", "unloaded"}


@pytest.mark.slow
def test_channel_targets_are_pending_when_the_channel_did_not_run(report: dict[str, Any]) -> None:
    assert len(report["targets"]) == 7  # the channel issue's three, the group-commit issue's four
    without = dict(report)
    for part in ("phases", "unloaded"):
        without[part] = {name: p for name, p in report[part].items() if "channel" not in name}
    without["ratios"] = figures.ratios(without)
    channel_targets = [t for t in figures.targets(without) if "channel" in t["target"]]
    assert len(channel_targets) == 2
    assert all(t["value"] is None and t["met"] is None for t in channel_targets)
    assert all("pending" in t["note"] for t in channel_targets)


@pytest.mark.slow
def test_text_report_shows_raw_figures_and_ratios(report: dict[str, Any]) -> None:
    text = render_bench(report)
    assert "free preview (402)" in text
    assert "paid, exact" in text
    assert "ratios:" in text
    assert "targets (channel issue; group commit for exact):" in text
    assert f"checks: {len(report['checks'])}/{len(report['checks'])} passed" in text


def test_scheme_registry() -> None:
    assert expand_schemes("both") == ["channel", "exact"]
    assert expand_schemes("exact") == ["exact"]
    with pytest.raises(ValueError, match="unknown scheme"):
        expand_schemes("cheque")
    assert unavailable_reason("exact") is None
    assert "unknown scheme" in str(unavailable_reason("cheque"))
    assert scheme_kit("exact").name == "exact"
    assert unavailable_reason("channel") is None
    assert scheme_kit("channel").name == "channel"


def test_a_scheme_whose_modules_are_missing_is_refused(channel_missing: None) -> None:
    reason = unavailable_reason("channel")
    assert reason is not None
    assert "not available yet (missing: agent_pay.no_such_module)" in reason
    with pytest.raises(SchemeUnavailableError, match="missing"):
        scheme_kit("channel")
    with pytest.raises(SchemeUnavailableError, match="missing"):
        build_stack(["exact", "channel"])
    assert unavailable_reason("exact") is None


def test_cli_refuses_an_unavailable_scheme(
    channel_missing: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--scheme", "channel", "--quick"]) == 2
    assert "channel scheme is not available yet" in capsys.readouterr().err


def test_cli_arguments_make_the_config() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    argv = ["--quick", "--paid-requests", "50", "--no-stock", "--scheme", "exact"]
    args = parser.parse_args(argv)
    config = cli.config_from_args(args)
    assert config.quick
    assert config.paid_requests == 50
    assert not config.stock
    assert config.schemes == ("exact",)
    full = cli.config_from_args(parser.parse_args([]))
    assert full.free_requests > config.free_requests
    assert full.chain == "both"  # the chain on a core of its own, and in the server's
    assert cli.config_from_args(parser.parse_args(["--chain", "embedded"])).chain == "embedded"


def test_memory_is_read_from_proc() -> None:
    reading = read_memory(os.getpid())
    if reading is None:
        pytest.skip("no /proc here")
    assert 0 < reading.rss_mib <= reading.peak_mib
    assert read_memory(2**30) is None


def test_cpu_time_is_read_from_proc() -> None:
    before = read_cpu_seconds(os.getpid())
    if before is None:
        pytest.skip("no /proc here")
    sum(i * i for i in range(300_000))  # some CPU work
    after = read_cpu_seconds(os.getpid())
    assert after is not None
    assert after > before
    assert read_cpu_seconds(2**30) is None


@pytest.mark.slow
def test_channel_alone_skips_the_stock_comparison() -> None:
    # The stock x402 server is paid by the "exact" payers: without them it would answer 402 to
    # every read, and fail the run's checks.
    config = dataclasses.replace(
        TINY, schemes=("channel",), free_requests=20, mining_batch=2, mining_singles=1
    )
    report = run_bench(config, Progress(enabled=False))
    assert report["stock_x402"] == {
        "status": "not run",
        "reason": "the exact scheme is not benchmarked",
    }
    assert report["phases"].keys() == {"free", "paid_channel"}
    assert all(report["checks"].values()), report["checks"]
