"""Talking JSON-RPC 2.0 to a node over HTTP, and what its failures mean for the chain layer:
unreachable or not JSON-RPC (`NodeUnavailableError`), a JSON-RPC error object (`RpcError`), a
revert (`as_revert`), an answer of the wrong shape (`parsing`)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from agent_pay.chain.base import ChainError, ContractRevertError, decode_revert_reason
from agent_pay.chain.rpc_codec import parse_bytes

__all__ = ["NodeUnavailableError", "RpcError", "RpcTransport", "as_revert", "parsing"]

_REVERT_CODE = 3  # geth / anvil: "execution reverted" with the revert data


class NodeUnavailableError(ChainError):
    """The node could not be reached, did not answer in time, or did not speak JSON-RPC.

    `maybe_sent` is False only when the request certainly never reached the node (the
    connection was refused): a transaction sent then was not broadcast.
    """

    def __init__(self, message: str, *, maybe_sent: bool = True) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


class RpcError(ChainError):
    """The node answered a request with a JSON-RPC error object."""

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{method}: {message} (code {code})")
        self.method = method
        self.code = code
        self.message = message
        self.data = data


class RpcTransport:
    """JSON-RPC 2.0 requests to the node at `url`, over a pooled httpx client. Thread-safe.

    Args:
        timeout: seconds for each request (connect, read, write).
        transport: an httpx transport (tests); a pooled HTTP transport by default.
    """

    def __init__(
        self, url: str, *, timeout: float, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.url = url
        self._http = httpx.Client(
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            headers={"content-type": "application/json"},
        )
        self._ids = itertools.count(1)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call; return its `result`. Raise NodeUnavailableError or RpcError."""
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        try:
            response = self._http.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise NodeUnavailableError(f"{method}: node at {self.url} timed out") from exc
        except httpx.ConnectError as exc:
            raise NodeUnavailableError(
                f"{method}: node at {self.url} unreachable: {exc}", maybe_sent=False
            ) from exc
        except httpx.HTTPError as exc:
            raise NodeUnavailableError(f"{method}: node at {self.url} unreachable: {exc}") from exc
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or ("result" not in answer and "error" not in answer):
            raise NodeUnavailableError(
                f"{method}: {self.url} did not answer JSON-RPC (HTTP {response.status_code})"
            )
        error = answer.get("error")
        if error is not None:
            if not isinstance(error, dict):
                raise NodeUnavailableError(f"{method}: malformed error object {error!r}")
            raise RpcError(
                method,
                int(error.get("code", 0)),
                str(error.get("message", "")),
                error.get("data"),
            )
        return answer["result"]


@contextmanager
def parsing(method: str) -> Iterator[None]:
    """An answer that does not have the shape JSON-RPC promises is the node's fault."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise NodeUnavailableError(f"{method}: malformed answer ({exc!r})") from exc


def as_revert(exc: RpcError) -> ContractRevertError | None:
    """A revert answer as ContractRevertError with the decoded reason; None if it is not one."""
    message = exc.message
    if exc.code != _REVERT_CODE and "revert" not in message.lower():
        return None
    data = b""
    raw = exc.data
    if isinstance(raw, dict):  # some nodes nest it: {"data": "0x..."}
        raw = raw.get("data")
    if isinstance(raw, str) and raw.startswith("0x"):
        try:
            data = parse_bytes(raw)
        except ValueError:
            data = b""
    reason = decode_revert_reason(data)
    if reason is None:
        _, _, tail = message.partition("execution reverted")
        reason = tail.lstrip(": ").strip() or None
    return ContractRevertError(reason, data)
