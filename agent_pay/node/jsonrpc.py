"""JSON-RPC 2.0 over HTTP for `agent-pay node`: requests and batches in, answers and error
objects out, and the parameter parsing every method shares (the methods are in `methods.py`).

Errors are JSON-RPC error objects as geth and anvil send them: -32700 unreadable JSON, -32600 not
a request, -32601 unknown method, -32602 bad parameters, 3 for a revert (message "execution
reverted: <reason>", `data` the revert payload), -32000 for a refused transaction or a missing
block, -32603 when the node itself is broken.

The body is bounded before it is parsed: at most `MAX_BODY_BYTES` (413 and -32600 beyond, before
the rest is read), read within the server's body timeout (408 and -32600), nested at most
`MAX_JSON_DEPTH` deep (-32600; Python's parser recurses per level, and py-evm raises the
recursion limit past what the C stack holds, so an unchecked nesting bomb kills the process).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, Protocol

from eth_utils import to_canonical_address
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent_pay.boundary import JsonShapeError, ServerLimits, check_json_depth, read_body
from agent_pay.errors import MalformedPaymentError

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
MAX_JSON_DEPTH = 64
UINT256_MAX = 2**256 - 1

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
    """A JSON-RPC quantity: 0x-hex (or a JSON integer) from 0 to 2**256 - 1."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= UINT256_MAX:
        return value
    # 66 characters at most: a longer string is no uint256, and int() of a huge one is slow.
    if isinstance(value, str) and value[:2] in ("0x", "0X") and 2 < len(value) <= 66:
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise RpcFailure(INVALID_PARAMS, f"invalid {name}: {_shown(value)}")


def _shown(value: Any) -> str:
    """A parameter as an error message quotes it: never more than 80 characters of it."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def as_bytes(value: Any, name: str = "data", size: int | None = None) -> bytes:
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            pass
        else:
            if size is None or len(raw) == size:
                return raw
    raise RpcFailure(INVALID_PARAMS, f"invalid {name}: {_shown(value)}")


def as_address(value: Any, name: str = "address") -> bytes:
    try:
        return bytes(to_canonical_address(value))
    except (TypeError, ValueError):
        raise RpcFailure(INVALID_PARAMS, f"invalid {name}: {_shown(value)}") from None


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


def _no_constant(name: str) -> Any:
    """JSON has no NaN or Infinity: a request holding one is a parse error."""
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """A number too large for a float (1e999) would become Infinity: a parse error too."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} does not fit a float")
    return value


class _Json(JSONResponse):
    """JSON with non-ASCII escaped: a string echoed from the request (the id, a method name)
    may hold a lone surrogate, which JSON can carry ("\\ud800") but UTF-8 cannot encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def create_rpc_app(api: Api, limits: ServerLimits | None = None) -> Starlette:
    """The ASGI app: JSON-RPC 2.0 (single and batch requests) on POST /."""
    body_timeout = (limits or ServerLimits()).body_timeout

    async def rpc(request: Request) -> Response:
        try:
            body = await read_body(request, MAX_BODY_BYTES, body_timeout)
        except MalformedPaymentError as exc:  # too large (413), too slow (408), unreadable
            failure = RpcFailure(-32600, f"invalid request: {exc.message}", str(exc.reason))
            return _Json(_error(None, failure), exc.status_code)
        try:
            check_json_depth(body, MAX_JSON_DEPTH)
        except JsonShapeError as exc:
            failure = (
                RpcFailure(-32600, f"invalid request: {exc}", "json_too_deep")
                if exc.too_deep
                else RpcFailure(-32700, f"parse error: {exc}")
            )
            return _Json(_error(None, failure))
        try:
            payload = json.loads(body, parse_constant=_no_constant, parse_float=_finite_float)
        except (ValueError, RecursionError):
            return _Json(_error(None, RpcFailure(-32700, "parse error")))
        if isinstance(payload, list):
            if not payload or len(payload) > MAX_BATCH:
                return _Json(_error(None, RpcFailure(-32600, "invalid batch size")))
            answers = [await _answer(api, item) for item in payload]
            return _Json([a for a in answers if a is not None])
        answer = await _answer(api, payload)
        return _Json(answer) if answer is not None else Response(status_code=204)

    async def about(request: Request) -> Response:
        return _Json({"node": api.client_version, "chainId": api.chain_id, "jsonrpc": "POST /"})

    return Starlette(routes=[Route("/", rpc, methods=["POST"]), Route("/", about, methods=["GET"])])
