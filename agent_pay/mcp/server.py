"""`agent-pay mcp`'s server: the `PayingAgent` tools on the official MCP SDK's `MCPServer`.

The descriptions are what the model reads: each says what the tool costs. A refusal is a tool
error (`isError`) whose text says why; over policy nothing is signed.
"""

from __future__ import annotations

from typing import Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from agent_pay.mcp.agent import PayingAgent, ToolRefusal

__all__ = ["INSTRUCTIONS", "build_server"]

INSTRUCTIONS = (
    "Pay-per-read articles (x402, stablecoins). list_articles and preview_article are free; "
    "buy_article pays the article's price from the user's wallet, within a spending policy "
    "(a cap per article and a total budget) that the user set and you cannot change. "
    "Preview first and buy only what is worth its price. Buying the same URL again never "
    "pays again: retry freely. spending() and purchases() show what was spent and bought."
)

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

_FREE = ToolAnnotations(read_only_hint=True, open_world_hint=True)
_PAYS = ToolAnnotations(read_only_hint=False, idempotent_hint=True, open_world_hint=True)
_LOCAL = ToolAnnotations(read_only_hint=True, open_world_hint=False)


def build_server(
    agent: PayingAgent, name: str = "agent-pay", *, log_level: LogLevel = "WARNING"
) -> MCPServer:
    """An MCP server exposing `agent`'s tools (run it with `.run("stdio")` or
    `.run("streamable-http", ...)`, or connect to it in process with `mcp.Client`). A refused
    tool call is the model's business, answered to it: logged only at INFO."""
    server: MCPServer = MCPServer(name, instructions=INSTRUCTIONS, log_level=log_level)

    @server.tool(
        description=(
            "FREE. List the articles an agent-pay content server sells: url, title, summary, "
            "author, prices, and whether you bought it already. server_url is the server's "
            "base URL, e.g. http://127.0.0.1:8402."
        ),
        annotations=_FREE,
    )
    async def list_articles(server_url: str) -> dict[str, Any]:
        return await _call(agent.list_articles(server_url))

    @server.tool(
        description=(
            "FREE, never pays. Read the free part (about the first third) of the article at "
            "url, and the offers for the rest: price, token, payee, and whether the user's "
            "spending policy allows it."
        ),
        annotations=_FREE,
    )
    async def preview_article(url: str) -> dict[str, Any]:
        return await _call(agent.preview_article(url))

    @server.tool(
        description=(
            "COSTS the article's price (see preview_article), paid from the user's wallet in "
            "stablecoin, within the user's spending policy. Returns the whole article, what it "
            "cost, the transaction and the server's signed receipt. Calling it again for the "
            "same url costs nothing (a re-read by key proof), so retrying is safe. Over the "
            "policy it fails with the reason and signs nothing."
        ),
        annotations=_PAYS,
    )
    async def buy_article(url: str) -> dict[str, Any]:
        return await _call(agent.buy_article(url))

    @server.tool(
        description="FREE. What was spent, what is in flight, the budget and what is left, "
        "per token; the per-article cap.",
        annotations=_LOCAL,
    )
    def spending() -> dict[str, Any]:
        return agent.spending_report()

    @server.tool(
        description="FREE. What this wallet bought (url, price, transaction), with each "
        "server's signed receipt.",
        annotations=_LOCAL,
    )
    def purchases() -> dict[str, Any]:
        return agent.purchases()

    return server


async def _call(call: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = await call
    except ToolRefusal as exc:
        raise ToolError(str(exc)) from None
    return result
