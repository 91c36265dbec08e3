"""The content server's articles as paid MCP tools, in x402's MCP transport.

One tool per article (`read_<slug>`, no arguments). Called without payment it answers the
payment-required result; called with `_meta["x402/payment"]` it returns the whole article and
the settlement in `_meta["x402/payment-response"]`. Any x402 MCP client pays it — the stock
`x402.mcp` one included.

It is a bridge, not a second paywall: each call is passed to the content server's own HTTP
paywall (the payload as `PAYMENT-SIGNATURE`), so the ledger, idempotency (a resent payload
is charged once), the signed receipts and every refusal reason are exactly those of HTTP. The
content server can be in this process (an ASGI transport) or anywhere over HTTP.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations

from agent_pay.errors import AgentPayError, MalformedPaymentError
from agent_pay.mcp.transport import (
    PAYMENT_RESPONSE_META_KEY,
    payment_in,
    payment_required_result,
)
from agent_pay.protocol import PaymentRequired, SettleResponse
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    decode_header,
    encode_header,
)

__all__ = ["ArticleTools", "paid_article_server", "tool_name"]


def tool_name(slug: str) -> str:
    return f"read_{slug}"


class ArticleTools:
    """Calls the content server at `base_url` on behalf of the paid tools."""

    def __init__(self, base_url: str, http: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http

    async def catalogue(self) -> list[dict[str, Any]]:
        response = await self.http.get(f"{self.base_url}/articles")
        response.raise_for_status()
        return list(response.json()["articles"])

    async def call(self, slug: str, meta: dict[str, Any] | None) -> CallToolResult:
        """One tool call: pass the payment (if any) to the paywall, answer in MCP's terms."""
        url = f"{self.base_url}/articles/{slug}"
        try:
            payment = payment_in(meta)
        except MalformedPaymentError as exc:
            return await self._ask(url, f"{exc.reason}: {exc.message}")
        headers = {PAYMENT_SIGNATURE_HEADER: encode_header(payment)} if payment else {}
        response = await self.http.get(url, headers=headers)
        if response.status_code == 200:
            return _article(response)
        if response.status_code == 402 and PAYMENT_REQUIRED_HEADER in response.headers:
            required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
            return payment_required_result(required)
        if response.status_code == 400:  # a malformed payment: ask again, saying what was wrong
            return await self._ask(url, _body(response).get("error") or "invalid payment")
        return CallToolResult(
            content=[
                TextContent(
                    type="text",
                    text=f"the content server answered HTTP "
                    f"{response.status_code}; nothing was charged",
                )
            ],
            is_error=True,
        )

    async def _ask(self, url: str, error: str) -> CallToolResult:
        response = await self.http.get(url)
        required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
        return payment_required_result(required.model_copy(update={"error": str(error)}))


async def paid_article_server(
    base_url: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    name: str = "agent-pay articles",
) -> tuple[MCPServer, ArticleTools]:
    """An MCP server whose tools are the articles of the content server at `base_url`, paid
    by x402 (close `ArticleTools.http` when done). `transport`: e.g. `httpx.ASGITransport(app)`
    for a server in this process."""
    tools = ArticleTools(base_url, httpx.AsyncClient(transport=transport, timeout=60))
    server: MCPServer = MCPServer(
        name,
        instructions="Each read_<article> tool returns a whole article for a price paid by x402 "
        "(an x402 MCP client pays it from _meta['x402/payment']).",
    )
    for entry in await tools.catalogue():
        server.add_tool(
            _handler(tools, str(entry["slug"])),
            name=tool_name(str(entry["slug"])),
            description=f"PAID ({_prices(entry)}, x402): the whole of “{entry['title']}”. "
            f"{entry.get('summary') or ''}",
            annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True),
        )
    return server, tools


def _handler(tools: ArticleTools, slug: str) -> Any:
    async def read_article(ctx: Context) -> CallToolResult:
        meta = ctx.request_context.meta
        return await tools.call(slug, dict(meta) if meta else None)

    return read_article


def _article(response: httpx.Response) -> CallToolResult:
    body = _body(response)
    text = f"# {body.get('title')}\n\n{body.get('content', '')}" if body else response.text
    meta: dict[str, Any] = {}
    header = response.headers.get(PAYMENT_RESPONSE_HEADER)
    if header is not None:
        # The article was paid for and served: deliver it even if its header is unreadable.
        with contextlib.suppress(AgentPayError):
            meta[PAYMENT_RESPONSE_META_KEY] = decode_header(header, SettleResponse).to_wire()
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=None, _meta=meta or None
    )


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _prices(entry: dict[str, Any]) -> str:
    return " or ".join(f"{p['price']} {p['token']}" for p in entry.get("prices", [])) or "priced"
