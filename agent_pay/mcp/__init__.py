"""agent-pay over the Model Context Protocol (needs the `mcp` extra: the official MCP SDK).

- `agent`: the paying tools' logic (list, preview, buy, spending, purchases), apart from MCP;
- `server`: those tools on an MCP server (`agent-pay mcp`);
- `transport`: x402's MCP transport — where payment-required, payment and settlement go;
- `paid_tools`: the content server's articles as x402-paid MCP tools;
- `payer`: our client paying any x402 MCP server's paid tools within a spending policy;
- `demo`: `agent-pay demo --mcp`, a scripted model driving `agent-pay mcp` over stdio.
"""
