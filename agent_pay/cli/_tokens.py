"""Amounts for people: "0.1 USDX", not "100000 of 0x5FbD…".

A receipt or a channel states atomic units and a token address; the token's symbol and decimals
are the chain's to say (never the server's). `TokenNames` asks the node, with two plain
`eth_call`s per token over JSON-RPC (no web3, no py-evm: the offline commands stay fast), and
falls back to atomic units and the full address when the node does not answer or is another
chain.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

__all__ = ["TokenNames", "format_units"]

_SYMBOL = "0x95d89b41"  # symbol()
_DECIMALS = "0x313ce567"  # decimals()


def format_units(amount: int, decimals: int) -> str:
    """`amount` atomic units as a plain decimal: 100000, 6 -> "0.1"."""
    value = Decimal(amount).scaleb(-decimals)
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


class TokenNames:
    """Symbol and decimals of tokens on the node at `url`, looked up once each."""

    def __init__(self, url: str | None, *, timeout: float = 2.0) -> None:
        self.url = url
        self.timeout = timeout
        self._chain_id: int | None = None
        self._reachable = url is not None
        self._known: dict[str, tuple[str, int] | None] = {}
        self._http: Any = None

    def _call(self, method: str, params: list[Any]) -> Any:
        import httpx

        if self._http is None:
            self._http = httpx.Client(timeout=self.timeout)
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        answer = self._http.post(self.url, json=body).json()
        if "error" in answer:
            raise ValueError(answer["error"])
        return answer["result"]

    def _on_chain(self, network: str) -> bool:
        if not self._reachable:
            return False
        if self._chain_id is None:
            try:
                self._chain_id = int(self._call("eth_chainId", []), 16)
            except Exception:  # no node, or not one: amounts stay atomic
                self._reachable = False
                return False
        return network == f"eip155:{self._chain_id}"

    def lookup(self, network: str, asset: str) -> tuple[str, int] | None:
        """(symbol, decimals) of `asset` on `network`, or None if the node cannot say."""
        key = f"{network}/{asset.lower()}"
        if key not in self._known:
            self._known[key] = None
            if self._on_chain(network):
                try:
                    decimals = int(self._call("eth_call", [{"to": asset, "data": _DECIMALS}]), 16)
                    symbol = _abi_string(self._call("eth_call", [{"to": asset, "data": _SYMBOL}]))
                except Exception:  # not a token we can read: atomic units
                    decimals, symbol = -1, ""
                if 0 <= decimals <= 36 and symbol:
                    self._known[key] = (symbol, decimals)
        return self._known[key]

    def format(self, amount: int, network: str, asset: str) -> str:
        """ "0.1 USDX", or "100000 atomic units of 0x…" when the chain cannot say."""
        found = self.lookup(network, asset)
        if found is None:
            return f"{amount} atomic units of {asset} on {network}"
        symbol, decimals = found
        return f"{format_units(amount, decimals)} {symbol}"

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> TokenNames:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _abi_string(result: str) -> str:
    data = bytes.fromhex(result.removeprefix("0x"))
    if len(data) < 64:
        return ""
    offset = int.from_bytes(data[:32], "big")
    length = int.from_bytes(data[offset : offset + 32], "big")
    text = data[offset + 32 : offset + 32 + length].decode("utf-8", errors="replace")
    return "".join(c for c in text if c.isprintable())[:16]
