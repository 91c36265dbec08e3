"""`agent-pay node` under hostile JSON-RPC: every bad input is a JSON-RPC error object with the
right code, never an internal error, never a dead process; eth_call and eth_estimateGas never run
with more gas than the cap."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agent_pay.boundary import JsonShapeError, check_json_depth
from agent_pay.node.anvil import free_port, stop_process
from agent_pay.node.jsonrpc import MAX_BODY_BYTES, MAX_JSON_DEPTH
from agent_pay.node.node import Node

BOMB = b"[" * 100_000 + b"]" * 100_000
ADDRESS = "0x" + "11" * 20
HASH = "0x" + "22" * 32
# Init code that loops forever (JUMPDEST; PUSH1 0; JUMP): only a gas limit stops it.
FOREVER = "0x5b600056"


# -- the depth check on its own


@pytest.mark.parametrize(
    "text",
    [b"[]", b"{}", b"1", b'"[[[["', b'{"a": [1, {"b": "]]]\\"[["}]}', b"[" * 64 + b"]" * 64],
)
def test_json_within_the_depth_passes(text: bytes) -> None:
    check_json_depth(text, 64)


@pytest.mark.parametrize(
    ("text", "too_deep"),
    [
        (b"[" * 65 + b"]" * 65, True),
        (BOMB, True),
        (b"[" * 100_000, True),  # never closed: refused without a parser recursing into it
        (b'{"a": ' * 65 + b"1" + b"}" * 65, True),
        (b"[[]", False),
        (b"[]]", False),
    ],
)
def test_json_too_deep_or_unbalanced_is_refused(text: bytes, too_deep: bool) -> None:
    with pytest.raises(JsonShapeError) as refused:
        check_json_depth(text, 64)
    assert refused.value.too_deep is too_deep


# -- in process


@pytest.fixture(scope="module")
def node_url() -> Iterator[str]:
    with Node.open(None, gas_cap=1_000_000) as node, node.serve(port=0) as url:
        yield url


def rpc(url: str, method: str, params: Any) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    answer = httpx.post(url, json=body, timeout=30)
    assert answer.status_code == 200
    result: dict[str, Any] = answer.json()
    return result


def test_a_nesting_bomb_is_an_invalid_request(node_url: str) -> None:
    answer = httpx.post(node_url, content=BOMB, timeout=30)
    assert answer.status_code == 200
    error = answer.json()["error"]
    assert error["code"] == -32600
    assert error["data"] == "json_too_deep"
    assert f"{MAX_JSON_DEPTH} levels" in error["message"]
    assert rpc(node_url, "eth_chainId", [])["result"] == "0x7a69"


def test_deep_params_inside_a_request_are_refused_too(node_url: str) -> None:
    params = b"[" * 200 + b"]" * 200
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": ' + params + b"}"
    assert httpx.post(node_url, content=body).json()["error"]["code"] == -32600


def test_unbalanced_json_is_a_parse_error(node_url: str) -> None:
    assert httpx.post(node_url, content=b"[" * 100_000).json()["error"]["code"] == -32600
    assert httpx.post(node_url, content=b'{"a": [}').json()["error"]["code"] == -32700


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc": "2.0", "id": Infinity, "method": "eth_chainId", "params": []}',
        b'{"jsonrpc": "2.0", "id": NaN, "method": "eth_chainId", "params": []}',
        b'{"jsonrpc": "2.0", "id": 1e999999, "method": "eth_chainId", "params": []}',
        b'{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": [-Infinity]}',
    ],
    ids=["id-infinity", "id-nan", "id-overflowing-float", "param-infinity"],
)
def test_nan_and_infinity_are_a_parse_error_not_a_500(node_url: str, body: bytes) -> None:
    """JSON has no NaN or Infinity (a float too large to hold is one too): such a request is
    a -32700 parse error. Echoing one as the id used to make the answer unencodable: a 500."""
    answer = httpx.post(node_url, content=body, timeout=30)
    assert answer.status_code == 200
    assert answer.json()["error"]["code"] == -32700


@pytest.mark.parametrize("where", ["method", "id", "param"])
def test_a_lone_surrogate_is_echoed_as_json_not_a_500(node_url: str, where: str) -> None:
    """A string holding a lone UTF-16 surrogate (valid JSON: "\\ud800") may be echoed in
    the answer (the id, the unknown method's name, a bad parameter): the answer stays valid
    JSON with the escape, never a 500."""
    lone = '"\\ud800"'
    method = lone if where == "method" else '"eth_getBalance"'
    request_id = lone if where == "id" else "1"
    param = lone if where == "param" else '"latest"'
    address = '"0x' + "11" * 20 + '"'
    body = (
        '{"jsonrpc": "2.0", "id": '
        + request_id
        + ', "method": '
        + method
        + ', "params": ['
        + address
        + ", "
        + param
        + "]}"
    )
    answer = httpx.post(node_url, content=body.encode(), timeout=30)
    assert answer.status_code == 200
    reply = answer.json()
    assert reply["jsonrpc"] == "2.0"
    if where == "id":
        assert reply["id"] == "\ud800"
        assert "result" in reply or "error" in reply
    else:
        assert reply["error"]["code"] in (-32601, -32602)


def test_an_oversized_body_is_413_before_it_is_read(node_url: str) -> None:
    declared = httpx.post(node_url, content=b" " * (MAX_BODY_BYTES + 1))
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == -32600

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    streamed = httpx.post(node_url, content=chunks())
    assert streamed.status_code == 413
    assert streamed.json()["error"]["data"] == "request_too_large"


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("eth_getBalance", []),
        ("eth_getBalance", [5]),
        ("eth_getBalance", ["0x12"]),
        ("eth_getBalance", [ADDRESS, "lastest"]),
        ("eth_getBalance", [ADDRESS, "0xzz"]),
        ("eth_getBalance", [ADDRESS, {"blockHash": "0x12"}]),
        ("eth_getBalance", [ADDRESS, []]),
        ("eth_getBalance", {"address": ADDRESS}),
        ("eth_getStorageAt", [ADDRESS, "0x" + "f" * 70]),
        ("eth_getStorageAt", [ADDRESS, True]),
        ("eth_getCode", [ADDRESS, 1.5]),
        ("eth_call", ["not an object"]),
        ("eth_call", [{"to": 7}]),
        ("eth_call", [{"to": ADDRESS, "data": "0xzz"}]),
        ("eth_call", [{"to": ADDRESS, "value": hex(2**300)}]),
        ("eth_call", [{"to": ADDRESS, "gas": "lots"}]),
        ("eth_call", [{"to": ADDRESS}, "0x" + "9" * 100]),
        ("eth_estimateGas", [{"from": "me"}]),
        ("eth_estimateGas", [{"to": ADDRESS, "value": -1}]),
        ("eth_sendRawTransaction", ["0xzz"]),
        ("eth_sendRawTransaction", [42]),
        ("eth_getTransactionByHash", ["0x1234"]),
        ("eth_getTransactionReceipt", [HASH + "00"]),
        ("eth_getBlockByHash", [HASH[:-2]]),
        ("eth_getBlockByNumber", ["0xzz"]),
        ("eth_getTransactionByBlockNumberAndIndex", ["latest", "x"]),
        ("eth_feeHistory", ["0x1", "latest", ["a", 1]]),
        ("eth_feeHistory", ["0x1", "latest", [50, 10]]),
        ("eth_feeHistory", ["ten", "latest"]),
        ("eth_getLogs", [5]),
        ("eth_getLogs", [{"topics": 5}]),
        ("eth_getLogs", [{"topics": [["0x12"]]}]),
        ("eth_getLogs", [{"address": [5]}]),
        ("eth_getLogs", [{"fromBlock": [1]}]),
    ],
)
def test_bad_params_are_invalid_params(node_url: str, method: str, params: Any) -> None:
    error = rpc(node_url, method, params)["error"]
    assert error["code"] == -32602, error


def test_eth_call_runs_with_at_most_the_gas_cap(node_url: str) -> None:
    started = time.monotonic()
    error = rpc(node_url, "eth_call", [{"data": FOREVER, "gas": hex(2**62)}])["error"]
    assert error["code"] == -32000
    assert "OutOfGas" in error["message"]
    assert time.monotonic() - started < 20  # 1M gas, not 2**62


@pytest.mark.slow
def test_eth_estimate_gas_runs_with_at_most_the_gas_cap(node_url: str) -> None:
    started = time.monotonic()
    answer = rpc(node_url, "eth_estimateGas", [{"data": FOREVER, "gas": hex(2**62)}])
    assert "error" in answer
    assert answer["error"]["code"] in (-32000, 3)
    assert time.monotonic() - started < 30
    # A call that fits under the cap is estimated as usual.
    transfer = rpc(node_url, "eth_estimateGas", [{"to": ADDRESS, "value": "0x1"}])
    assert int(transfer["result"], 16) == 21_000


def test_the_gas_cap_must_be_usable() -> None:
    with pytest.raises(ValueError, match="gas_cap"):
        Node.open(None, gas_cap=100)


# -- a real process: the crash was a process death


@pytest.mark.slow
def test_a_nesting_bomb_does_not_kill_the_node_process() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    node = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "agent_pay.cli", "node", "--ephemeral", "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert node.poll() is None, node.communicate()[1].decode()
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the node did not come up"
                time.sleep(0.1)
        for body in (BOMB, b"{" * 100_000, b'{"a":' * 50_000):
            answer = httpx.post(url, content=body, timeout=30)
            assert answer.status_code == 200
            assert answer.json()["error"]["code"] in (-32600, -32700)
        assert node.poll() is None
        assert rpc(url, "eth_chainId", [])["result"] == "0x7a69"
    finally:
        stop_process(node)
