"""The whole system on one machine: chain, stablecoins, facilitator and content server.

    stack = Stack.embedded()                    # py-evm chain, USDX + CNYX, sample articles
    stack.fund(agent_address, "USDX", "5")      # mint (local chains only)
    with stack.serve() as base_url:             # real uvicorn on 127.0.0.1, a free port
        ...                                     # agents pay over real HTTP

The demo, the example agent and the test toolkit are all built on this.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from agent_pay.assets import AssetRegistry
from agent_pay.chain.base import Chain
from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_account
from agent_pay.chain.embedded import EmbeddedChain
from agent_pay.chain.stablecoin import Stablecoin, deploy_stablecoins
from agent_pay.facilitator.exact import ExactEvmScheme
from agent_pay.facilitator.local import LocalFacilitator
from agent_pay.server.app import Renderer, create_app, render_article
from agent_pay.server.catalogue import Catalogue
from agent_pay.server.offers import DEFAULT_MAX_TIMEOUT_SECONDS, ExactOffers

__all__ = ["DEPLOYER_INDEX", "FACILITATOR_INDEX", "Stack", "sample_articles_dir"]

DEPLOYER_INDEX = 0  # throwaway dev account that deploys the tokens and is their only minter
FACILITATOR_INDEX = 1  # throwaway dev account that pays settlement gas


def sample_articles_dir() -> Path:
    """The articles shipped with agent-pay (installed copy first, then the source tree)."""
    installed = Path(__file__).parent / "_articles"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "articles"


@dataclass
class Stack:
    """Chain + tokens + facilitator + content server app, wired together."""

    chain: Chain
    tokens: dict[str, Stablecoin]
    owner: Transactor
    scheme: ExactEvmScheme
    facilitator: LocalFacilitator
    catalogue: Catalogue
    app: FastAPI
    assets: AssetRegistry = field(init=False)

    def __post_init__(self) -> None:
        self.assets = AssetRegistry(t.asset for t in self.tokens.values())

    @classmethod
    def embedded(
        cls,
        *,
        articles: Path | Catalogue | None = None,
        chain: Chain | None = None,
        render: Renderer = render_article,
        max_timeout_seconds: int = DEFAULT_MAX_TIMEOUT_SECONDS,
    ) -> Stack:
        """Deploy the default stablecoins on `chain` (a fresh embedded one by default) and wire
        the facilitator and the server to them."""
        chain = chain or EmbeddedChain()
        owner = Transactor(chain, dev_account(DEPLOYER_INDEX))
        tokens = deploy_stablecoins(owner)
        scheme = ExactEvmScheme(tokens.values(), Transactor(chain, dev_account(FACILITATOR_INDEX)))
        facilitator = LocalFacilitator(scheme)
        if not isinstance(articles, Catalogue):
            articles = Catalogue.from_directory(articles or sample_articles_dir())
        registry = AssetRegistry(t.asset for t in tokens.values())
        schemes = [ExactOffers(registry, max_timeout_seconds=max_timeout_seconds)]
        app = create_app(articles, registry, facilitator, render=render, schemes=schemes)
        return cls(chain, tokens, owner, scheme, facilitator, articles, app)

    def fund(self, address: str, symbol: str, amount: str | Decimal) -> None:
        """Mint `amount` (human units) of `symbol` to `address`."""
        self.fund_many([address], {symbol: amount})

    def fund_many(self, addresses: Iterable[str], funds: dict[str, str | Decimal]) -> None:
        """Mint each of `funds` to every address, one batch of transactions per token."""
        addresses = list(addresses)
        for symbol, amount in funds.items():
            token = self.tokens[symbol]
            atomic = token.asset.parse(amount)
            if atomic and addresses:
                token.mint_many(self.owner, [(a, atomic) for a in addresses])

    def balance(self, address: str, symbol: str = "USDX") -> int:
        return self.tokens[symbol].balance_of(address)

    @contextmanager
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Run the content server on uvicorn in a background thread; yield its base URL."""
        with serve_app(self.app, host, port) as url:
            yield url


@contextmanager
def serve_app(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `app` with uvicorn in a daemon thread until the block exits; yield its URL."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="agent-pay-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.005)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
