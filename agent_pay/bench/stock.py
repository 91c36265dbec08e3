"""The stock x402 Python server and facilitator, on our embedded chain, for comparison.

The comparison runs x402's own code for everything that decides a read's cost: its FastAPI
payment middleware and `x402ResourceServer` in front of the article, and its `x402Facilitator`
with the stock "exact" EVM facilitator scheme (`ExactEvmFacilitatorScheme`: signature check,
transfer simulation by `eth_call`, `transferWithAuthorization`, receipt and Transfer-event check).
The only part that is ours is how that scheme reaches the chain: x402 asks for a
`FacilitatorEvmSigner` ("implement this protocol to integrate with your blockchain provider"),
and `ChainFacilitatorSigner` implements it on our `Chain` interface, in process — no JSON-RPC
hop, the same as our own facilitator gets. x402's `FacilitatorWeb3Signer` over JSON-RPC would
add an HTTP round trip to every chain call and poll for receipts every 0.1 s; that is not what
is measured here.

Requires the `x402` package (a benchmark-only dependency): `pip install x402`.
"""

from __future__ import annotations

from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.responses import Response
from x402 import x402Facilitator, x402ResourceServer
from x402.http.middleware.fastapi import payment_middleware
from x402.http.types import PaymentOption, RouteConfig
from x402.mechanisms.evm.exact import ExactEvmFacilitatorScheme, ExactEvmServerScheme
from x402.mechanisms.evm.types import TransactionReceipt, TypedDataDomain, TypedDataField
from x402.schemas import AssetAmount

from agent_pay.chain.base import Chain, ContractRevertError
from agent_pay.chain.contract import Transactor
from agent_pay.chain.dev_roles import STOCK_FACILITATOR_INDEX
from agent_pay.chain.devkeys import dev_signer
from agent_pay.stack import Stack

__all__ = ["STOCK_FACILITATOR_INDEX", "ChainFacilitatorSigner", "create_stock_app"]

"""Throwaway dev account that pays the stock facilitator's gas (ours uses #1): separate nonces."""

_STOCK_GAS_LIMIT = 500_000  # FacilitatorWeb3Signer's default transaction gas limit
_BALANCE_OF = function_signature_to_4byte_selector("balanceOf(address)")


class StockRevertError(Exception):
    """A reverted call, worded as web3 words it ("execution reverted: ..."), which is what the
    stock scheme's revert classifiers look for."""


class ChainFacilitatorSigner:
    """x402's `FacilitatorEvmSigner` protocol on an agent-pay `Chain`."""

    def __init__(self, chain: Chain, transactor: Transactor, *, gas_limit: int = _STOCK_GAS_LIMIT):
        self._chain = chain
        self._transactor = transactor
        self._gas_limit = gas_limit

    @property
    def address(self) -> str:
        return self._transactor.address

    def get_addresses(self) -> list[str]:
        return [self._transactor.address]

    def get_chain_id(self) -> int:
        return self._chain.chain_id

    def read_contract(
        self, address: str, abi: list[dict[str, Any]], function_name: str, *args: Any
    ) -> Any:
        function = _function(abi, function_name, len(args))
        data = _encode(function, args)
        try:
            output = self._chain.call(to_checksum_address(address), data, self.address)
        except ContractRevertError as exc:
            raise StockRevertError(f"execution reverted: {exc.reason or ''}") from exc
        types = [o["type"] for o in function.get("outputs", [])]
        values = abi_decode(types, output)
        return values[0] if len(values) == 1 else list(values)

    def verify_typed_data(
        self,
        address: str,
        domain: TypedDataDomain,
        types: dict[str, list[TypedDataField]],
        primary_type: str,
        message: dict[str, Any],
        signature: bytes,
    ) -> bool:
        """EOA signatures only (what the benchmark's agents hold), recovered as x402's web3
        signer recovers them."""
        domain_dict: dict[str, Any] = {
            "name": domain.name,
            "version": domain.version,
            "chainId": domain.chain_id,
            "verifyingContract": domain.verifying_contract,
        }
        fields = {
            name: [{"name": f.name, "type": f.type} for f in group] for name, group in types.items()
        }
        fields["EIP712Domain"] = [
            {"name": "name", "type": "string"},
            {"name": "version", "type": "string"},
            {"name": "chainId", "type": "uint256"},
            {"name": "verifyingContract", "type": "address"},
        ]
        msg = {k: "0x" + v.hex() if isinstance(v, bytes) else v for k, v in message.items()}
        typed = {
            "types": fields,
            "primaryType": primary_type,
            "domain": domain_dict,
            "message": msg,
        }
        try:
            recovered = Account.recover_message(
                encode_typed_data(full_message=typed), signature=signature
            )
        except Exception:
            return False
        return str(recovered).lower() == address.lower()

    def write_contract(
        self,
        address: str,
        abi: list[dict[str, Any]],
        function_name: str,
        *args: Any,
        data_suffix: str | None = None,
    ) -> str:
        data = _encode(_function(abi, function_name, len(args)), args)
        if data_suffix:
            data += bytes.fromhex(data_suffix.removeprefix("0x"))
        return self.send_transaction(address, data)

    def send_transaction(self, to: str, data: bytes) -> str:
        tx_hash = self._transactor.send(to_checksum_address(to), data, gas=self._gas_limit)
        return "0x" + tx_hash.hex()

    def wait_for_transaction_receipt(self, tx_hash: str) -> TransactionReceipt:
        receipt = self._chain.wait_for_receipt(bytes.fromhex(tx_hash.removeprefix("0x")))
        logs = [
            {"address": log.address, "topics": list(log.topics), "data": log.data}
            for log in receipt.logs
        ]
        return TransactionReceipt(
            status=1 if receipt.status else 0,
            block_number=receipt.block_number,
            tx_hash=receipt.tx_hash_hex,
            logs=logs,
        )

    def get_balance(self, address: str, token_address: str) -> int:
        if not token_address or int(token_address, 16) == 0:
            return self._chain.get_balance(to_checksum_address(address))
        data = _BALANCE_OF + abi_encode(["address"], [to_checksum_address(address)])
        (balance,) = abi_decode(
            ["uint256"], self._chain.call(to_checksum_address(token_address), data)
        )
        return int(balance)

    def get_code(self, address: str) -> bytes:
        return self._chain.get_code(to_checksum_address(address))


def _function(abi: list[dict[str, Any]], name: str, arity: int) -> dict[str, Any]:
    for entry in abi:
        if (
            entry.get("type", "function") == "function"
            and entry.get("name") == name
            and len(entry.get("inputs", [])) == arity
        ):
            return entry
    raise ValueError(f"no function {name} taking {arity} arguments in the ABI")


def _encode(function: dict[str, Any], args: tuple[Any, ...]) -> bytes:
    types = [_abi_type(i) for i in function.get("inputs", [])]
    selector = function_signature_to_4byte_selector(f"{function['name']}({','.join(types)})")
    return bytes(selector + abi_encode(types, list(args)))


def _abi_type(param: dict[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param.get("components", []))
        return f"({inner}){kind[5:]}"
    return kind


def create_stock_app(stack: Stack, slug: str) -> FastAPI:
    """A FastAPI app selling article `slug` behind x402's stock payment middleware, settled by
    x402's stock facilitator on `stack`'s chain, priced as our server prices it (USDX)."""
    article = stack.catalogue.get(slug)
    if article is None:
        raise KeyError(f"no article {slug!r}")
    token = stack.tokens["USDX"]
    asset = token.asset
    signer = ChainFacilitatorSigner(
        stack.chain, Transactor(stack.chain, dev_signer(STOCK_FACILITATOR_INDEX))
    )
    facilitator = x402Facilitator()
    facilitator.register([asset.network], ExactEvmFacilitatorScheme(signer))
    server = x402ResourceServer(facilitator)
    server_scheme: Any = ExactEvmServerScheme()  # type: ignore[no-untyped-call]
    server.register(asset.network, server_scheme)
    price = AssetAmount(
        amount=str(article.price_atomic("USDX", asset.decimals)),
        asset=asset.address,
        extra={"name": asset.eip712_name, "version": asset.eip712_version},
    )
    routes = {
        f"GET /articles/{slug}": RouteConfig(
            accepts=PaymentOption(
                scheme="exact",
                pay_to=article.author,
                price=price,
                network=asset.network,
                max_timeout_seconds=120,
            ),
            description=article.title,
            mime_type="application/json",
        )
    }
    app = FastAPI(title="stock x402 server (comparison)", docs_url=None, redoc_url=None)
    middleware = payment_middleware(routes, server)

    @app.middleware("http")
    async def x402_payment(request: Request, call_next: Any) -> Response:
        response: Response = await middleware(request, call_next)
        return response

    @app.get(f"/articles/{slug}")
    async def read() -> JSONResponse:
        return JSONResponse(
            {
                "slug": article.slug,
                "title": article.title,
                "author": article.author,
                "content": article.body,
                "complete": True,
            }
        )

    return app
