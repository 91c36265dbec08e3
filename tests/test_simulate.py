"""The market simulation: deterministic for a seed, money conserved, the real protocol below."""

from __future__ import annotations

import contextvars
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent_pay.simulate import cli
from agent_pay.simulate.engine import SimulationConfig, SimulationRun, simulate
from agent_pay.simulate.ledger import OUTCOMES
from agent_pay.simulate.lockstep import POSITION, LockstepChain, SimClock
from agent_pay.simulate.market import MarketSpec, derive_key, generate_market
from agent_pay.simulate.results import CostAssumptions, summarize
from agent_pay.simulate.text import render_simulation

SPEC = MarketSpec(agents=14, articles=12, days=2, seed=42, reads_per_day=4)
CONFIG = SimulationConfig(batch=8)


@pytest.fixture(scope="module")
def first() -> tuple[SimulationRun, dict[str, Any]]:
    run = simulate(SPEC, CONFIG)
    return run, summarize(run)


@pytest.fixture(scope="module")
def second() -> dict[str, Any]:
    return summarize(simulate(SPEC, CONFIG))


def test_two_runs_with_one_seed_agree_on_everything_but_the_clock(
    first: tuple[SimulationRun, dict[str, Any]], second: dict[str, Any]
) -> None:
    _, report = first
    assert report["deterministic"] == second["deterministic"]
    assert report["digest"] == second["digest"]
    assert report["config"] == second["config"]
    assert report["chain_head"] == second["chain_head"]  # the same chain, hash for hash


def test_another_seed_is_another_market() -> None:
    one = generate_market(SPEC)
    other = generate_market(MarketSpec(agents=14, articles=12, days=2, seed=43, reads_per_day=4))
    assert [a.address for a in one.agents] != [a.address for a in other.agents]
    assert [a.address for a in one.agents] == [a.address for a in generate_market(SPEC).agents]
    assert derive_key(1, "agent", 0) == derive_key(1, "agent", 0) != derive_key(2, "agent", 0)


def test_money_is_conserved(first: tuple[SimulationRun, dict[str, Any]]) -> None:
    run, report = first
    det = report["deterministic"]
    assert all(det["checks"].values()), det["checks"]
    assert det["revenue"] == det["spend"]
    for symbol, token in run.stack.tokens.items():
        minted = sum(run.funded[symbol].values())
        authors = sum(token.balance_of(a.address) for a in run.market.authors)
        agents = sum(token.balance_of(a.address) for a in run.market.agents if symbol in a.tokens)
        assert authors + agents == minted
        assert token.total_supply() == run.supply_after_funding[symbol]


def test_every_paid_read_is_one_settlement_on_chain(
    first: tuple[SimulationRun, dict[str, Any]],
) -> None:
    run, report = first
    totals = report["deterministic"]["totals"]
    assert totals["paid"] > 0
    assert totals["settlement_transactions"] == totals["paid"] == totals["chain_transactions"]
    assert totals["error"] == 0
    assert sum(totals[o] for o in OUTCOMES) == totals["visits"] == len(run.ledger.visits)
    for visit in run.ledger.paid():
        receipt = run.stack.chain.get_receipt(bytes.fromhex(visit.transaction[2:]))
        assert receipt is not None
        assert receipt.status
    gas = report["deterministic"]["cost"]["gas_per_paid_read"]
    assert 60_000 < gas < 90_000


def test_a_batch_of_reads_settles_in_one_block(first: tuple[SimulationRun, dict[str, Any]]) -> None:
    run, report = first
    blocks: dict[int, int] = {}
    for visit in run.ledger.paid():
        receipt = run.stack.chain.get_receipt(bytes.fromhex(visit.transaction[2:]))
        assert receipt is not None
        blocks[receipt.block_number] = blocks.get(receipt.block_number, 0) + 1
    assert max(blocks.values()) <= CONFIG.batch
    # Fewer blocks than reads: reads of one batch share a block.
    assert report["deterministic"]["totals"]["blocks"] < report["deterministic"]["totals"]["paid"]


def test_cost_follows_the_stated_assumptions(first: tuple[SimulationRun, dict[str, Any]]) -> None:
    run, _ = first
    cheap = summarize(run, CostAssumptions(gas_price_gwei=0.01, eth_usd=2_000))
    dear = summarize(run, CostAssumptions(gas_price_gwei=1, eth_usd=2_000))
    ratio = (
        dear["deterministic"]["cost"]["usd_per_paid_read"]
        / (cheap["deterministic"]["cost"]["usd_per_paid_read"])
    )
    assert ratio == pytest.approx(100, rel=1e-3)
    assert cheap["config"]["assumptions"]["gas_price_gwei"] == 0.01


def test_performance_is_reported_apart(first: tuple[SimulationRun, dict[str, Any]]) -> None:
    _, report = first
    performance = report["performance"]
    assert performance["latency_ms"]["paid"]["count"] == report["deterministic"]["totals"]["paid"]
    assert performance["paid_reads_per_second"] > 0
    assert "performance" not in report["deterministic"]
    assert "digest" in render_simulation(report)


def test_lockstep_chain_mines_when_every_read_waits() -> None:
    clock = SimClock(1_700_000_000)
    chain = LockstepChain(clock=clock)
    assert chain.latest_timestamp() == 1_700_000_000
    clock.advance(5)
    assert clock() == 1_700_000_005
    with pytest.raises(ValueError, match="backwards"):
        clock.set(1)
    chain.begin_batch(2)
    with pytest.raises(RuntimeError, match="previous batch"):
        chain.begin_batch(1)
    chain.read_done()
    chain.read_done()
    chain.begin_batch(1)  # a finished batch makes room for the next
    chain.read_done()


def _take_turn(chain: LockstepChain, position: int, finish: bool = True) -> list[int]:
    """In a thread: wait for `position`'s turn as a transactor does, then finish the read (or
    not). The returned list gets `position` once the turn came."""
    served: list[int] = []

    def run() -> None:
        POSITION.set(position)
        chain.fee_params()
        served.append(position)
        if finish:
            chain.read_done()

    threading.Thread(target=run, daemon=True).start()
    return served


def _finish(chain: LockstepChain, position: int | None) -> None:
    """Finish read `position` from outside its thread (as its task does)."""

    def run() -> None:
        POSITION.set(position)
        chain.read_done()

    contextvars.copy_context().run(run)


def _served(served: list[int], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while not served and time.monotonic() < deadline:
        time.sleep(0.005)
    return bool(served)


def test_lockstep_turns_go_in_position_order() -> None:
    chain = LockstepChain(clock=SimClock(1_700_000_000))
    chain.begin_batch(6)
    order: list[int] = []
    threads = []
    for position in reversed(range(6)):  # the last position asks first

        def run(position: int = position) -> None:
            POSITION.set(position)
            chain.fee_params()
            order.append(position)
            chain.read_done()

        threads.append(threading.Thread(target=run, daemon=True))
        threads[-1].start()
        time.sleep(0.01)
    for thread in threads:
        thread.join(10)
    assert order == list(range(6))


def test_lockstep_turn_skips_finished_reads_and_ends_with_the_batch() -> None:
    chain = LockstepChain(clock=SimClock(1_700_000_000))
    chain.begin_batch(3)
    third = _take_turn(chain, 2)
    second = _take_turn(chain, 1, finish=False)
    _finish(chain, 1)  # read 1's task finished while its thread waits; read 0 has not
    assert not _served(second, 0.05)
    assert not third
    _finish(chain, 0)  # the turn moves past 1 onto 2: both go on
    assert _served(second)
    assert _served(third)

    chain.begin_batch(1)
    stray = _take_turn(chain, 5, finish=False)  # a thread that outlived its read
    assert not _served(stray, 0.05)
    _finish(chain, None)  # the batch is over: nobody waits for a turn any more
    assert _served(stray)


def test_cli_writes_json_plots_and_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim"
    argv = ["--agents", "6", "--articles", "6", "--days", "1", "--seed", "3"]
    code = cli.main([*argv, "--batch", "4", "--out", str(out), "--no-progress"])
    assert code == 0
    data = json.loads((out / "report.json").read_text())
    assert data["config"]["agents"] == 6
    assert "_latencies" not in data["performance"]  # raw samples stay out of the JSON
    assert (out / "report.html").is_file()
    assert sorted(p.name for p in out.glob("*.png"))
    assert "determinism digest" in capsys.readouterr().out


def test_cli_refuses_an_unavailable_scheme(
    channel_missing: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--scheme", "channel", "--agents", "2", "--no-plots"]) == 2
    assert "not available" in capsys.readouterr().err


def test_a_channel_market_is_deterministic_and_conserves_money() -> None:
    spec = MarketSpec(agents=8, articles=6, days=2, seed=9, reads_per_day=4, authors=2)
    config = SimulationConfig(
        scheme="channel", batch=8, channel_deposit_reads=10, channel_after_reads=1
    )
    first, second = (summarize(simulate(spec, config)) for _ in range(2))
    det = first["deterministic"]
    assert all(det["checks"].values()), det["checks"]
    assert det["totals"]["channels_opened"] > 0
    assert det["totals"]["paid_by_scheme"].get("channel", 0) > det["totals"]["channels_opened"]
    assert det["revenue"] == det["spend"]
    assert first["digest"] == second["digest"]


def test_the_agent_pay_command_runs_it(tmp_path: Path) -> None:
    # Through the main command, whose settings must not swallow simulate's own flags.
    from agent_pay.cli import main as agent_pay

    out = tmp_path / "sim"
    argv = ["simulate", "--agents", "3", "--articles", "4", "--days", "1", "--seed", "2"]
    assert agent_pay([*argv, "--no-plots", "--no-progress", "--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["config"]["articles"] == 4
