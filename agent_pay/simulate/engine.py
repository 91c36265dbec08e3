"""Run a market through the real protocol, in one process, and record every visit.

Nothing is modelled below the agents' choices: each visit is an HTTP request to the real FastAPI
app (over the in-process ASGI transport), answered 402 with the free preview; the agent's
`PaymentAuth` decides, signs an EIP-712 authorization with the agent's key and retries; the app
has the in-process facilitator verify it (signature recovery, chain reads) and settle it (a
`transferWithAuthorization` transaction mined on py-evm). Reads run in batches: the agents' n-th
visits of a day, `batch` at a time, concurrently; each batch's settlements are mined into one
block (`LockstepChain`). Simulated time moves two seconds per batch and a day per day.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from anyio import to_thread
from eth_utils import keccak

from agent_pay.bench.schemes import SchemeKit, build_stack, claim_channels, scheme_kit
from agent_pay.client.auth import PaymentRecord
from agent_pay.client.policy import AssetLimit, SpendingPolicy
from agent_pay.errors import NoAcceptableOfferError, PolicyViolationError
from agent_pay.protocol import PaymentRequired, PaymentRequirements
from agent_pay.server.catalogue import Catalogue
from agent_pay.simulate.ledger import Ledger, Visit
from agent_pay.simulate.lockstep import POSITION, LockstepChain, SimClock
from agent_pay.simulate.market import AgentProfile, Market, generate_market
from agent_pay.stack import Stack

__all__ = ["SIM_EPOCH", "SimulationConfig", "SimulationRun", "simulate"]

SIM_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z: simulated days start here
_BATCH_SECONDS = 2  # simulated time per batch of reads (a block interval)
_MINT_SLICE = 400  # mints per block: a block holds 60M gas, a mint takes at most 100k


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate and how. `batch` reads run together and settle in one block.

    With `scheme="channel"` the server offers channel and exact; an agent opens a channel with
    an author once it expects `channel_after_reads` reads from them (having paid them that
    many minus one times, by exact), depositing `channel_deposit_reads` reads' worth. The
    author claims every channel's vouchers at the end of each day.
    """

    scheme: str = "exact"
    batch: int = 128
    channel_deposit_reads: int = 10
    channel_after_reads: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.batch <= 400:
            raise ValueError("batch must be between 1 and 400 (a block holds 500 settlements)")


@dataclass
class SimulationRun:
    """Everything a run produced: the market, the stack it ran on, and the ledger of visits."""

    market: Market
    config: SimulationConfig
    stack: Stack
    ledger: Ledger
    funded: dict[str, dict[str, int]]  # symbol -> address -> atomic units minted
    supply_after_funding: dict[str, int]
    first_block: int  # the first block mined for reads
    day_blocks: list[tuple[int, int]]  # per day: first and last block mined for its reads
    channels: dict[int, list[bytes]] = field(default_factory=dict)  # agent -> its channel ids
    timings: dict[str, float] = field(default_factory=dict)  # wall-clock seconds per stage


class _Agent:
    """One agent's client side: its policy-bound `PaymentAuth` and what its visit is doing."""

    def __init__(
        self,
        profile: AgentProfile,
        stack: Stack,
        kit: SchemeKit,
        clock: SimClock,
        seed: int,
        reads_per_payee: int,
    ) -> None:
        self.profile = profile
        limits = tuple(
            AssetLimit(
                stack.tokens[s].asset,
                stack.tokens[s].asset.parse(profile.caps[s]),
                stack.tokens[s].asset.parse(profile.budgets[s]),
            )
            for s in profile.tokens
        )
        policy = SpendingPolicy(limits)
        self.declined = False
        self.payment: PaymentRecord | None = None
        nonces = _nonces(seed, profile.index)
        self.scheme = kit.client(
            profile.signer,
            policy,
            reads_per_payee=reads_per_payee,
            clock=clock,
            nonce_factory=nonces,
        )
        self.auth = kit.payment_auth(
            self.scheme,
            policy,
            clock=clock,
            nonce_factory=nonces,
            decide=self._decide,
            on_payment=self._paid,
        )

    def _decide(
        self, response: httpx.Response, _: PaymentRequired, __: PaymentRequirements
    ) -> bool:
        # The agent reads the free preview and its topics; it pays only for its interests.
        tags = set(response.json().get("tags", []))
        if self.profile.interests & tags:
            return True
        self.declined = True
        return False

    def _paid(self, record: PaymentRecord) -> None:
        self.payment = record


def _nonces(seed: int, agent: int) -> Callable[[], bytes]:
    counter = iter(range(1 << 62))
    return lambda: keccak(text=f"agent-pay simulate/{seed}/nonce/{agent}/{next(counter)}")


def _fund(stack: Stack, market: Market) -> dict[str, dict[str, int]]:
    funded: dict[str, dict[str, int]] = {s: {} for s in stack.tokens}
    for agent in market.agents:
        for symbol, budget in agent.budgets.items():
            funded[symbol][agent.address] = stack.tokens[symbol].asset.parse(budget)
    for symbol, grants in funded.items():
        items = list(grants.items())
        for start in range(0, len(items), _MINT_SLICE):
            stack.tokens[symbol].mint_many(stack.owner, items[start : start + _MINT_SLICE])
    return funded


def _server_timing(header: str) -> dict[str, float]:
    steps: dict[str, float] = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            try:
                steps[name] = float(rest[4:])
            except ValueError:
                continue
    return steps


def _refusal(agent: AgentProfile, prices: dict[str, Decimal]) -> str:
    """Why the policy refused: the price is over the agent's cap, or the budget is spent."""
    held = [s for s in agent.tokens if s in prices]
    if held and all(prices[s] > agent.caps[s] for s in held):
        return "over_cap"
    return "over_budget"


async def _visit(
    http: httpx.AsyncClient,
    agent: _Agent,
    slug: str,
    day: int,
    market_prices: dict[str, dict[str, Decimal]],
) -> Visit:
    agent.declined, agent.payment = False, None
    started = time.perf_counter()
    outcome, detail = "paid", ""
    timing: dict[str, float] = {}
    try:
        response = await http.get(f"/articles/{slug}", auth=agent.auth)
    except PolicyViolationError:
        outcome = _refusal(agent.profile, market_prices[slug])
    except NoAcceptableOfferError:
        outcome = "no_token"
    except Exception as exc:  # recorded and checked: a run with errors fails its checks
        outcome, detail = "error", f"{type(exc).__name__}: {exc}"
    else:
        if response.status_code == 200 and agent.payment is not None:
            timing = _server_timing(response.headers.get("server-timing", ""))
        elif response.status_code == 200 and response.json().get("complete"):
            outcome = "reread"
        elif response.status_code == 402 and agent.declined:
            outcome = "declined"
        else:
            outcome, detail = "error", f"HTTP {response.status_code}: {response.text[:200]}"
    latency = time.perf_counter() - started
    payment = agent.payment if outcome == "paid" else None
    return Visit(
        day=day,
        agent=agent.profile.index,
        slug=slug,
        outcome=outcome,
        scheme=payment.offer.scheme if payment else "",
        asset=payment.offer.asset if payment else "",
        amount=payment.offer.amount if payment else 0,
        transaction=payment.transaction if payment else "",
        latency=latency,
        verify_ms=timing.get("verify"),
        settle_ms=timing.get("settle"),
        detail=detail,
    )


async def _read(
    chain: LockstepChain,
    position: int,
    http: httpx.AsyncClient,
    agent: _Agent,
    slug: str,
    day: int,
    prices: dict[str, dict[str, Decimal]],
) -> Visit:
    POSITION.set(position)  # this task's own context: it follows the read into its threads
    try:
        return await _visit(http, agent, slug, day, prices)
    finally:
        chain.read_done()


async def _run_days(
    run: SimulationRun,
    agents: Sequence[_Agent],
    clock: SimClock,
    chain: LockstepChain,
    progress: Callable[[str, bool], None],
) -> None:
    market, batch = run.market, run.config.batch
    # Every read of a batch needs a worker thread for verify and settle at once.
    to_thread.current_default_thread_limiter().total_tokens = batch + 8
    prices = {a.slug: dict(a.prices) for a in market.articles}
    bought: list[set[str]] = [set() for _ in agents]
    transport = httpx.ASGITransport(app=run.stack.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://simulation") as http:
        listing = (await http.get("/articles")).json()["articles"]
        if len(listing) != len(market.articles):
            raise RuntimeError("the server lists another catalogue than the market's")
        for day in range(market.spec.days):
            day_started = time.perf_counter()
            clock.set(SIM_EPOCH + day * 86_400 + 8 * 3600)
            first_block = chain.block_number() + 1
            day_start = len(run.ledger.visits)
            plans = [market.plan(a.profile, day, bought[a.profile.index]) for a in agents]
            rounds = max((len(p) for p in plans), default=0)
            visits_today = 0
            for position in range(rounds):
                queue = [
                    (agent, plan[position])
                    for agent, plan in zip(agents, plans, strict=True)
                    if len(plan) > position
                ]
                for start in range(0, len(queue), batch):
                    chunk = queue[start : start + batch]
                    clock.advance(_BATCH_SECONDS)
                    chain.begin_batch(len(chunk))

                    done = await asyncio.gather(
                        *(
                            _read(chain, i, http, agent, slug, day, prices)
                            for i, (agent, slug) in enumerate(chunk)
                        )
                    )
                    for visit in done:
                        run.ledger.add(visit)
                        if visit.outcome == "paid":
                            bought[visit.agent].add(visit.slug)
                    visits_today += len(chunk)
                    progress(f"day {day + 1}/{market.spec.days}: {visits_today:,} visits", False)
            claim_channels(run.stack)  # the authors claim the day's vouchers
            run.day_blocks.append((first_block, chain.block_number()))
            seconds = time.perf_counter() - day_started
            paid = sum(1 for v in run.ledger.visits[day_start:] if v.outcome == "paid")
            progress(
                f"day {day + 1}/{market.spec.days}: {visits_today:,} visits, {paid:,} paid, "
                f"{seconds:.1f} s ({visits_today / max(seconds, 1e-9):,.0f} visits/s)",
                True,
            )


def _kit(config: SimulationConfig) -> SchemeKit:
    if config.scheme == "channel":
        return scheme_kit(
            "channel", min_expected_reads=config.channel_after_reads, exact_fallback=True
        )
    return scheme_kit(config.scheme)


def _stack(config: SimulationConfig, catalogue: Catalogue, chain: LockstepChain) -> Stack:
    if config.scheme != "channel":
        return build_stack([config.scheme], articles=catalogue, chain=chain)
    from agent_pay.assembly.channels import ChannelOptions

    # Nothing on a wall-clock timer: claims at the end of each simulated day, and no polling
    # thread reading the chain while a batch is being mined (the handler learns of channels
    # from the transactions it submits itself).
    never = 365 * 24 * 3600.0
    options = ChannelOptions(
        settle_every_seconds=never,
        settle_every_vouchers=10**12,
        refresh_interval=never,
        replay_window=0.0,
    )
    return build_stack(
        ["channel", "exact"], articles=catalogue, chain=chain, channel_options=options
    )


def simulate(
    market_spec: Any,
    config: SimulationConfig | None = None,
    *,
    progress: Callable[[str, bool], None] | None = None,
) -> SimulationRun:
    """Generate the market of `market_spec` and run it through the protocol.

    `progress(text, lasting)` is told what is happening (lasting=False: a live update).
    Raises SchemeUnavailableError when the scheme cannot run here.
    """
    config = config or SimulationConfig()
    say = progress or (lambda _text, _lasting: None)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    kit = _kit(config)
    market = generate_market(market_spec)
    timings["market"] = time.perf_counter() - started
    say(
        f"market: {len(market.agents):,} agents, {len(market.articles):,} articles by "
        f"{len(market.authors):,} authors, {market.spec.days} days, seed {market.spec.seed}",
        True,
    )

    mark = time.perf_counter()
    clock = SimClock(SIM_EPOCH - 3600)
    chain = LockstepChain(clock=clock)
    stack = _stack(config, Catalogue(market.articles), chain)
    funded = _fund(stack, market)
    supply = {s: t.total_supply() for s, t in stack.tokens.items()}
    agents = [
        _Agent(profile, stack, kit, clock, market.spec.seed, config.channel_deposit_reads)
        for profile in market.agents
    ]
    timings["setup"] = time.perf_counter() - mark
    say(f"chain, tokens, server and {len(agents):,} funded agents ready", True)

    run = SimulationRun(
        market=market,
        config=config,
        stack=stack,
        ledger=Ledger(),
        funded=funded,
        supply_after_funding=supply,
        first_block=chain.block_number() + 1,
        day_blocks=[],
        timings=timings,
    )
    mark = time.perf_counter()
    try:
        asyncio.run(_run_days(run, agents, clock, chain, say))
    finally:
        stack.close()  # stops the channel handler's background parts, if any
    for agent in agents:
        records = getattr(agent.scheme, "channels", None)
        if callable(records):
            run.channels[agent.profile.index] = [
                bytes.fromhex(r.channel_id[2:]) for r in records() if r.status != "failed"
            ]
    timings["reads"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - started
    return run
