"""JSON-RPC 2.0 over HTTP for `agent-pay node`: requests and batches in, answers and error
objects out, and the parameter parsing every method shares (the methods are in `methods.py`).

Errors are JSON-RPC error objects as geth and anvil send them: -32700 unreadable JSON, -32600 not
a request, -32601 unknown method, -32602 bad parameters, 3 for a revert (message "execution
reverted: <reason>", `data` the revert payload), -32000 for a refused transaction or a missing
block, -32603 when the node itself is broken.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from eth_utils import to_canonical_address
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = [
    "INVALID_PARAMS",
    "Api",
    "RpcFailure",
    "as_address",
    "as_bytes",
    "as_quantity",
    "calldata_floor",
    "create_rpc_app",
    "param",
    "to_hex",
]

log = logging.getLogger("agent_pay.node")

MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_BATCH = 1000

INVALID_PARAMS = -32602


class RpcFailure(Exception):
    """A JSON-RPC error to answer with."""

    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


# -- parameter parsing ---------------------------------------------------------------------------


def param(params: list[Any], index: int, default: Any = ...) -> Any:
    if index < len(params) and params[index] is not None:
        return params[index]
    if default is ...:
        raise RpcFailure(INVALID_PARAMS, f"missing value for required argument {index}")
    return default


def as_quantity(value: Any, name: str = "quantity") -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value[:2] in ("0x", "0X") and len(value) > 2:
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise RpcFailure(INVALID_PARAMS, f"invalid {name}: {value!r}")


def as_bytes(value: Any, name: str = "data", size: int | None = None) -> bytes:
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            pass
        else:
            if size is None or len(raw) == size:
                return raw
    raise RpcFailure(INVALID_PARAMS, f"invalid {name}: {value!r}")


def as_address(value: Any, name: str = "address") -> bytes:
    try:
        return bytes(to_canonical_address(value))
    except (TypeError, ValueError):
        raise RpcFailure(INVALID_PARAMS, f"invalid {name}: {value!r}") from None


def to_hex(data: bytes) -> str:
    return "0x" + bytes(data).hex()


def calldata_floor(data: bytes) -> int:
    zeros = data.count(0)
    return 21_000 + 10 * (zeros + 4 * (len(data) - zeros))


class Api(Protocol):
    """What the HTTP app serves: one coroutine per call, raising RpcFailure for an error."""

    client_version: str

    @property
    def chain_id(self) -> int: ...

    async def handle(self, method: Any, params: Any) -> Any: ...


def _error(request_id: Any, failure: RpcFailure) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": failure.to_json()}


async def _answer(api: Api, request: Any) -> dict[str, Any] | None:
    if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" or "method" not in request:
        return _error(None, RpcFailure(-32600, "invalid request"))
    request_id = request.get("id")
    try:
        result = await api.handle(request["method"], request.get("params"))
    except RpcFailure as failure:
        answer = _error(request_id, failure)
    except Exception as exc:  # a bug or a broken node: answer, log, keep serving
        log.exception("JSON-RPC %s failed", request.get("method"))
        answer = _error(request_id, RpcFailure(-32603, f"internal error: {exc!r}"))
    else:
        answer = {"jsonrpc": "2.0", "id": request_id, "result": result}
    return answer if "id" in request else None  # a notification gets no answer


def create_rpc_app(api: Api) -> Starlette:
    """The ASGI app: JSON-RPC 2.0 (single and batch requests) on POST /."""

    async def rpc(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse(_error(None, RpcFailure(-32600, "request too large")), 413)
        try:
            payload = json.loads(body)
        except ValueError:
            return JSONResponse(_error(None, RpcFailure(-32700, "parse error")))
        if isinstance(payload, list):
            if not payload or len(payload) > MAX_BATCH:
                return JSONResponse(_error(None, RpcFailure(-32600, "invalid batch size")))
            answers = [await _answer(api, item) for item in payload]
            return JSONResponse([a for a in answers if a is not None])
        answer = await _answer(api, payload)
        return JSONResponse(answer) if answer is not None else Response(status_code=204)

    async def about(request: Request) -> Response:
        return JSONResponse(
            {"node": api.client_version, "chainId": api.chain_id, "jsonrpc": "POST /"}
        )

    return Starlette(routes=[Route("/", rpc, methods=["POST"]), Route("/", about, methods=["GET"])])
