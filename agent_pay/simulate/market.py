"""The market a simulation runs: authors and their articles, agents with budgets and interests.

Everything is drawn from one seed, so a seed names a market: keys (derived by hashing the seed,
never random), topics, prices, budgets, and each agent's reading plan for each day. The draws use
`random.Random` seeded with strings, which Python hashes with SHA-512 (not the per-process
`hash()`), so plans are the same in every run and on every machine.

The shape, on purpose a little skewed like a real one:
- authors differ in how popular they are (log-normal), articles around their author's standing;
- articles carry one to three topics and a price in USDX (0.01 to 0.5), some also or only in
  CNYX (at about 7 CNYX per USDX);
- agents hold USDX, CNYX or both, follow two to four topics, cap what they pay per read, and have
  a budget of roughly what their reading would cost (some run out);
- each day an agent visits a few articles, mostly in its interests (weighted by popularity),
  sometimes one outside them, now and then one it bought before; it reads the free preview and
  pays for the rest only if the article is on its topics and within its cap and budget (a
  re-read of a bought article is free where the server honours the agent's receipt).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from eth_account import Account
from eth_utils import keccak

from agent_pay.server.catalogue import Article
from agent_pay.signing import LocalSigner

__all__ = ["TOPICS", "AgentProfile", "AuthorProfile", "Market", "MarketSpec", "generate_market"]

TOPICS = (
    "agents", "cryptography", "databases", "design", "distributed-systems", "economics",
    "ethereum", "history", "http", "law", "machine-learning", "micropayments", "open-source",
    "policy", "pricing", "privacy", "science", "security", "stablecoins", "startups",
)  # fmt: skip

_USDX_PRICES = (
    ("0.01", 15), ("0.02", 20), ("0.05", 25), ("0.1", 20), ("0.2", 12), ("0.5", 8),
)  # fmt: skip
_CAPS = (("0.05", 10), ("0.1", 25), ("0.2", 30), ("0.5", 25), ("1", 10))  # fmt: skip
CNY_PER_USD = Decimal("7")  # how CNYX prices are set from USDX ones (a modelling choice)
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_WORDS = (
    "ledger", "market", "reader", "signal", "archive", "protocol", "margin", "channel", "budget",
    "theory", "method", "record", "network", "model", "system", "evidence", "practice", "review",
    "future", "question", "answer", "value", "measure", "trust",
)  # fmt: skip


@dataclass(frozen=True)
class MarketSpec:
    """The size and seed of a market."""

    agents: int = 1_000
    articles: int = 1_000
    days: int = 10
    seed: int = 1
    reads_per_day: float = 10.0  # mean visits per agent per day
    authors: int | None = None  # default: one per ten articles

    def __post_init__(self) -> None:
        if self.agents < 1 or self.articles < 1 or self.days < 1:
            raise ValueError("agents, articles and days must be at least 1")
        if self.reads_per_day <= 0:
            raise ValueError("reads_per_day must be positive")
        if self.authors is not None and not 1 <= self.authors <= self.articles:
            raise ValueError("authors must be between 1 and the number of articles")

    @property
    def author_count(self) -> int:
        return self.authors or max(1, self.articles // 10)


@dataclass(frozen=True)
class AuthorProfile:
    index: int
    name: str
    address: str
    popularity: float


@dataclass(frozen=True)
class AgentProfile:
    """An agent: its key, what it holds and reads, and what it will pay."""

    index: int
    signer: LocalSigner
    tokens: tuple[str, ...]  # symbols held, preferred first
    interests: frozenset[str]
    caps: dict[str, Decimal]  # per token, the most it pays for one read
    budgets: dict[str, Decimal]  # per token, what it is funded with and may spend in all
    appetite: float  # mean visits per day

    @property
    def address(self) -> str:
        return self.signer.address


@dataclass(frozen=True)
class Market:
    spec: MarketSpec
    authors: tuple[AuthorProfile, ...]
    articles: tuple[Article, ...]
    popularity: dict[str, float]  # slug -> weight
    agents: tuple[AgentProfile, ...]

    def plan(self, agent: AgentProfile, day: int, bought: set[str]) -> list[str]:
        """The slugs `agent` visits on `day`, in order: a pure function of the seed, the agent,
        the day and what it has already bought (one visit in twenty goes back to one of those;
        new visits never pick them)."""
        rng = random.Random(f"{self.spec.seed}/plan/{agent.index}/{day}")  # noqa: S311
        visits = _poisson(rng, agent.appetite)
        held = set(agent.tokens)
        on_topic = [
            a.slug
            for a in self.articles
            if a.slug not in bought and agent.interests & set(a.tags) and held & set(a.prices)
        ]
        owned = sorted(bought)
        chosen: list[str] = []
        for _ in range(3 * visits):  # redraw a repeat, a bounded number of times
            if len(chosen) == visits:
                break
            draw = rng.random()
            if draw < 0.05 and owned:  # back to something it bought (a re-read)
                slug = owned[rng.randrange(len(owned))]
            elif draw < 0.15 or not on_topic:  # browsing outside its interests
                slug = self.articles[rng.randrange(len(self.articles))].slug
            else:
                slug = rng.choices(on_topic, [self.popularity[s] for s in on_topic])[0]
            if slug not in chosen:
                chosen.append(slug)
        return chosen


def derive_key(seed: int, role: str, index: int) -> str:
    """A private key as hex, derived from the seed (deterministic; for simulations only)."""
    value = int.from_bytes(keccak(text=f"agent-pay simulate/{seed}/{role}/{index}"), "big")
    return f"0x{value % (_SECP256K1_N - 1) + 1:064x}"


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method; means here are small (a few visits a day).
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _weighted(rng: random.Random, table: Sequence[tuple[str, int]]) -> Decimal:
    values, weights = zip(*table, strict=True)
    return Decimal(rng.choices(values, weights)[0])


def _body(rng: random.Random, title: str) -> str:
    paragraphs = []
    for _ in range(rng.randint(4, 7)):
        sentences = []
        for _ in range(rng.randint(3, 5)):
            words = rng.choices(_WORDS, k=rng.randint(8, 16))
            sentences.append(" ".join(words).capitalize() + ".")
        paragraphs.append(" ".join(sentences))
    return f"{title}.\n\n" + "\n\n".join(paragraphs) + "\n"


def generate_market(spec: MarketSpec) -> Market:
    """Draw the whole market from `spec.seed`."""
    # Modelling draws, not secrets (S311): keys come from keccak in `derive_key`.
    rng = random.Random(f"{spec.seed}/market")  # noqa: S311
    authors = []
    for i in range(spec.author_count):
        address = Account.from_key(derive_key(spec.seed, "author", i)).address
        popularity = rng.lognormvariate(0.0, 1.0)
        authors.append(AuthorProfile(i, f"author-{i:04d}", address, popularity))
    articles, weights = [], {}
    for i in range(spec.articles):
        author = authors[i % len(authors)]
        tags = tuple(sorted(rng.sample(TOPICS, rng.randint(1, 3))))
        usdx = _weighted(rng, _USDX_PRICES)
        kind = rng.random()
        prices: dict[str, Decimal] = {}
        if kind >= 0.1:
            prices["USDX"] = usdx
        if kind < 0.4:  # some also, a few only, in yuan
            prices["CNYX"] = (usdx * CNY_PER_USD).quantize(Decimal("0.01"))
        slug = f"a{i:05d}-{tags[0]}"
        title = f"On {tags[0].replace('-', ' ')}: note {i}"
        articles.append(
            Article(
                slug=slug,
                title=title,
                author=author.address,
                author_name=author.name,
                tags=tags,
                body=_body(rng, title),
                prices=prices,
            )
        )
        weights[slug] = author.popularity * rng.lognormvariate(0.0, 0.5)
    mean_price = {
        "USDX": _mean([a.prices["USDX"] for a in articles if "USDX" in a.prices]),
        "CNYX": _mean([a.prices["CNYX"] for a in articles if "CNYX" in a.prices]),
    }
    agents = []
    for i in range(spec.agents):
        arng = random.Random(f"{spec.seed}/agent/{i}")  # noqa: S311
        kind = arng.random()
        tokens = ("USDX",) if kind < 0.75 else ("CNYX",) if kind < 0.9 else ("USDX", "CNYX")
        appetite = spec.reads_per_day * arng.uniform(0.5, 1.5)
        budgets = {}
        for symbol in tokens:
            share = 1 / len(tokens)
            planned = mean_price[symbol] * Decimal(str(appetite * spec.days * share))
            budget = planned * Decimal(str(arng.uniform(0.4, 1.4)))
            budgets[symbol] = max(budget.quantize(Decimal("0.01")), Decimal("0.01"))
        cap = _weighted(arng, _CAPS)
        caps = {s: cap * (CNY_PER_USD if s == "CNYX" else 1) for s in tokens}
        agents.append(
            AgentProfile(
                index=i,
                signer=LocalSigner.from_key(derive_key(spec.seed, "agent", i)),
                tokens=tokens,
                interests=frozenset(arng.sample(TOPICS, arng.randint(2, 4))),
                caps=caps,
                budgets=budgets,
                appetite=appetite,
            )
        )
    return Market(spec, tuple(authors), tuple(articles), weights, tuple(agents))


def _mean(values: Sequence[Decimal]) -> Decimal:
    return sum(values, Decimal(0)) / len(values) if values else Decimal("0.1")
