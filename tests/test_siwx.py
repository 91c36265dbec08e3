"""x402's sign-in-with-x: a stock x402 client re-reads what its address bought, for free.

The stock Python client (`x402` with its SIWX client extension) answers every 402 that declares
`sign-in-with-x` by signing the server's EIP-4361 message; our server checks it (domain, uri,
its own stateless nonce, times, chain, the EIP-191 signature) and grants a re-read of what that
address bought, through the same lookup as our own `AGENT-PAY-ENTITLEMENT` proof. Another key,
a used, foreign or expired sign-in is refused with `entitlement_invalid` and no paid content.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from x402 import x402Client
from x402.extensions.sign_in_with_x import (
    CreateSIWxClientExtensionOptions,
    create_siwx_client_extension,
    create_siwx_payload,
    encode_siwx_header,
)
from x402.http.clients.httpx import x402_httpx_transport
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner

from agent_pay.chain.contract import Transactor
from agent_pay.chain.dev_roles import FACILITATOR_SERVICE_INDEX
from agent_pay.chain.devkeys import dev_signer
from agent_pay.errors import PaymentRejectedError, Reason
from agent_pay.protocol import PaymentRequired
from agent_pay.protocol.codec import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    decode_header,
)
from agent_pay.protocol.siwx import SIGN_IN_WITH_X, SIWX_HEADER, SiwxPayload
from agent_pay.server.siwx import SignInWithX
from agent_pay.signing.siwe import siwe_message
from agent_pay.stack import Stack
from agent_pay.store.open import open_store
from agent_pay.testing import FakeClock, Testbed

SLUG = "why-micropayments-failed"  # 0.1 USDX
OTHER = "reading-a-vyper-contract"
PRICE = 100_000
BASE = "http://testserver"


@pytest.fixture(scope="module")
def bed() -> Testbed:
    return Testbed.create()


def funded(bed: Testbed) -> LocalAccount:
    account: LocalAccount = Account.create()
    bed.fund(account.address, "USDX", "1")
    return account


def stock(bed: Testbed, account: LocalAccount, *, sign_in: bool = True) -> httpx.AsyncClient:
    """The stock x402 client over the in-process app: pays our token, signs in if asked."""
    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(account), networks="eip155:*")
    usdx = bed.tokens["USDX"].asset
    client.set_spend_controls(
        {
            "allowed_assets": [
                {"network": usdx.network, "asset": usdx.address, "max_amount_per_payment": "300000"}
            ]
        }
    )
    if sign_in:
        options = CreateSIWxClientExtensionOptions(signers=[EthAccountSigner(account)])
        client.register_extension(create_siwx_client_extension(options))
    transport = x402_httpx_transport(client, httpx.ASGITransport(app=bed.app))
    return httpx.AsyncClient(transport=transport, base_url=BASE)


async def declared(bed: Testbed, base: str = BASE, slug: str = SLUG) -> dict[str, Any]:
    """The sign-in-with-x declaration of a fresh 402."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bed.app), base_url=base) as http:
        response = await http.get(f"/articles/{slug}")
    assert response.status_code == 402
    required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
    assert required.extensions is not None
    declaration: dict[str, Any] = required.extensions[SIGN_IN_WITH_X]
    return declaration


async def signed_in(account: LocalAccount, declaration: dict[str, Any], url: str) -> str:
    """The stock library's SIGN-IN-WITH-X header for `declaration`, signed by `account`."""
    chain = declaration["supportedChains"][0]
    info = {**declaration["info"], "chainId": chain["chainId"], "type": chain["type"]}
    payload = await create_siwx_payload(info, EthAccountSigner(account), url)
    return encode_siwx_header(payload)


async def present(bed: Testbed, header: str, slug: str = SLUG) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bed.app), base_url=BASE) as http:
        return await http.get(f"/articles/{slug}", headers={SIWX_HEADER: header})


def assert_refused(response: httpx.Response, bed: Testbed, slug: str = SLUG) -> None:
    assert response.status_code == 402, response.text
    body = response.json()
    assert body["error"] == Reason.ENTITLEMENT_INVALID
    assert body["complete"] is False
    article = bed.catalogue.get(slug)
    assert article is not None
    assert body["content"] == article.preview  # the free part only
    required = decode_header(response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired)
    assert required.error == Reason.ENTITLEMENT_INVALID
    assert required.extensions is not None
    assert SIGN_IN_WITH_X in required.extensions


# -- the declaration ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_402_declares_sign_in_with_x_as_the_spec_shapes_it(bed: Testbed) -> None:
    declaration = await declared(bed)
    assert set(declaration) == {"info", "supportedChains", "schema"}
    info = declaration["info"]
    assert info["domain"] == "testserver"
    assert info["uri"] == f"{BASE}/articles/{SLUG}"
    assert info["version"] == "1"
    assert len(info["nonce"]) == 32
    assert int(info["nonce"], 16) >= 0
    issued = time.mktime(time.strptime(info["issuedAt"], "%Y-%m-%dT%H:%M:%S.000Z"))
    expires = time.mktime(time.strptime(info["expirationTime"], "%Y-%m-%dT%H:%M:%S.000Z"))
    assert expires - issued == 300
    assert info["statement"]
    assert info["resources"] == [info["uri"]]
    assert declaration["supportedChains"] == [{"chainId": "eip155:31337", "type": "eip191"}]
    assert declaration["schema"]["type"] == "object"
    assert "signature" in declaration["schema"]["required"]


def test_our_eip4361_text_is_the_siwe_librarys() -> None:
    """The message we rebuild to verify is, byte for byte, what the SIWE library x402's
    client signs (with and without the optional fields)."""
    from siwe import SiweMessage

    account = Account.create()
    base = {
        "domain": "127.0.0.1:18200",
        "address": account.address,
        "uri": "http://127.0.0.1:18200/articles/a",
        "version": "1",
        "chainId": "eip155:31337",
        "type": "eip191",
        "nonce": "0123456789abcdef0123456789abcdef",
        "issuedAt": "2026-12-07T19:00:00.000Z",
        "signature": "0x" + "11" * 65,
    }
    optional = {
        "statement": "Sign in to read",
        "expirationTime": "2026-12-07T19:05:00.000Z",
        "notBefore": "2026-12-07T19:00:00.000Z",
        "requestId": "r-1",
        "resources": ["http://127.0.0.1:18200/articles/a", "urn:x:y"],
    }
    for extra in ({}, optional):
        payload = SiwxPayload.from_wire({**base, **extra})
        theirs = SiweMessage(
            domain=payload.domain,
            address=payload.address,
            uri=payload.uri,
            version=payload.version,
            chain_id=31337,
            nonce=payload.nonce,
            issued_at=payload.issued_at,
            statement=payload.statement,
            expiration_time=payload.expiration_time,
            not_before=payload.not_before,
            request_id=payload.request_id,
            resources=payload.resources,
        ).prepare_message()
        assert siwe_message(payload) == theirs


# -- the stock client --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_stock_client_rereads_what_it_bought_for_free(bed: Testbed) -> None:
    account = funded(bed)
    article = bed.catalogue.get(SLUG)
    assert article is not None
    async with stock(bed, account) as http:
        first = await http.get(f"/articles/{SLUG}")  # signs in (not bought: refused), pays
        assert first.status_code == 200, first.text
        assert PAYMENT_RESPONSE_HEADER in first.headers
        paid = bed.balance(account.address, "USDX")
        assert paid == 1_000_000 - PRICE
        for _ in range(2):  # each re-read signs the fresh message of its own 402
            again = await http.get(f"/articles/{SLUG}")
            assert again.status_code == 200, again.text
            assert again.json()["content"] == article.body
            assert PAYMENT_RESPONSE_HEADER not in again.headers  # nothing was paid
        other = await http.get(f"/articles/{OTHER}")  # not bought: signing in is not enough
        assert other.status_code == 200  # ... so it paid for it
        assert PAYMENT_RESPONSE_HEADER in other.headers
    assert bed.balance(account.address, "USDX") == paid - 250_000


@pytest.mark.anyio
async def test_another_key_signs_in_but_reads_nothing_it_did_not_buy(bed: Testbed) -> None:
    buyer, stranger = funded(bed), funded(bed)
    async with stock(bed, buyer) as http:
        assert (await http.get(f"/articles/{SLUG}")).status_code == 200
    header = await signed_in(stranger, await declared(bed), f"{BASE}/articles/{SLUG}")
    assert_refused(await present(bed, header), bed)
    # The stock client with that key: its sign-in is refused, so it pays.
    async with stock(bed, stranger) as http:
        response = await http.get(f"/articles/{SLUG}")
    assert response.status_code == 200
    assert bed.balance(stranger.address, "USDX") == 1_000_000 - PRICE


# -- refusals ----------------------------------------------------------------------------------


@pytest.fixture
def buyer(bed: Testbed) -> LocalAccount:
    account = funded(bed)
    return account


async def bought(bed: Testbed, account: LocalAccount) -> None:
    async with stock(bed, account, sign_in=False) as http:
        assert (await http.get(f"/articles/{SLUG}")).status_code == 200


@pytest.mark.anyio
async def test_a_sign_in_is_accepted_once(bed: Testbed, buyer: LocalAccount) -> None:
    await bought(bed, buyer)
    header = await signed_in(buyer, await declared(bed), f"{BASE}/articles/{SLUG}")
    assert (await present(bed, header)).status_code == 200
    assert_refused(await present(bed, header), bed)  # replayed


@pytest.mark.anyio
async def test_a_sign_in_for_another_host_or_article_is_refused(
    bed: Testbed, buyer: LocalAccount
) -> None:
    await bought(bed, buyer)
    foreign = await declared(bed, base="http://elsewhere.example")
    header = await signed_in(buyer, foreign, f"http://elsewhere.example/articles/{SLUG}")
    assert_refused(await present(bed, header), bed)
    # Signed for one article, presented for another (the buyer bought the first only)
    header = await signed_in(buyer, await declared(bed), f"{BASE}/articles/{SLUG}")
    assert_refused(await present(bed, header, slug=OTHER), bed, slug=OTHER)


@pytest.mark.anyio
async def test_an_altered_or_self_made_sign_in_is_refused(
    bed: Testbed, buyer: LocalAccount
) -> None:
    await bought(bed, buyer)
    declaration = await declared(bed)
    # A nonce the server never issued, correctly signed by the buyer
    declaration["info"]["nonce"] = "f" * 32
    header = await signed_in(buyer, declaration, f"{BASE}/articles/{SLUG}")
    assert_refused(await present(bed, header), bed)
    # A later expiry than the server's (the nonce binds the times)
    declaration = await declared(bed)
    declaration["info"]["expirationTime"] = "2099-01-01T00:00:00.000Z"
    header = await signed_in(buyer, declaration, f"{BASE}/articles/{SLUG}")
    assert_refused(await present(bed, header), bed)
    # Claiming the buyer's address with another key's signature
    declaration = await declared(bed)
    header = await signed_in(buyer, declaration, f"{BASE}/articles/{SLUG}")
    forged = json.loads(base64.b64decode(header))
    message = siwe_message(SiwxPayload.from_wire(forged))
    other = Account.create()
    signature = other.sign_message(encode_defunct(text=message)).signature
    forged["signature"] = "0x" + bytes(signature).hex()
    assert_refused(await present(bed, base64.b64encode(json.dumps(forged).encode()).decode()), bed)


@pytest.mark.anyio
async def test_an_expired_sign_in_is_refused(bed: Testbed, buyer: LocalAccount) -> None:
    await bought(bed, buyer)
    entitlements = bed.server.entitlements
    real = entitlements.siwx
    clock = FakeClock(time.time())
    entitlements.siwx = SignInWithX(["eip155:31337"], secret=b"k" * 32, clock=clock)
    try:
        header = await signed_in(buyer, await declared(bed), f"{BASE}/articles/{SLUG}")
        clock.now += 301
        response = await present(bed, header)
        assert_refused(response, bed)
        assert "expired" in response.json()["message"]
        clock.now -= 2  # within its time it reads: the refusal was the clock's
        assert (await present(bed, header)).status_code == 200
    finally:
        entitlements.siwx = real


@pytest.mark.anyio
async def test_an_unreadable_sign_in_header_is_a_400(bed: Testbed) -> None:
    for value in ("not base64!", base64.b64encode(b'{"domain": "x"}').decode()):
        response = await present(bed, value)
        assert response.status_code == 400
        assert response.json()["error"] == Reason.SIWX_MALFORMED


# -- several servers on one shared store -------------------------------------------------------


@pytest.mark.anyio
async def test_a_sign_in_is_spent_once_across_servers_on_a_shared_store(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two servers on one PostgreSQL store (one chain, one entitlement secret): a sign-in one
    accepted is a replay at the other. The nonce is written from a worker thread."""
    secret = bytes(range(32))
    stores = [open_store(postgres_url, tmp_path / name) for name in ("a", "b")]
    try:
        a = Testbed.create(
            ledger=stores[0].ledger, siwx_nonces=stores[0].nonces, entitlement_secret=secret
        )
        b = Stack.connect(
            a.chain,
            a.tokens,
            Transactor(a.chain, dev_signer(FACILITATOR_SERVICE_INDEX)),
            ledger=stores[1].ledger,
            siwx_nonces=stores[1].nonces,
            entitlement_secret=secret,
        )
        buyer = funded(a)
        await bought(a, buyer)
        header = await signed_in(buyer, await declared(a), f"{BASE}/articles/{SLUG}")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=b.app), base_url=BASE
        ) as http:
            first = await http.get(f"/articles/{SLUG}", headers={SIWX_HEADER: header})
        assert first.status_code == 200, first.text  # bought on a, re-read on b
        assert_refused(await present(a, header), a)  # and spent for a too
    finally:
        for store in stores:
            store.close()


class _SlowNonces:
    """A shared store's nonce table, as slow as a far database: each write takes 0.25 s."""

    def __init__(self) -> None:
        self.spent: set[str] = set()

    def spend(self, nonce: str, expires: float, now: float) -> bool:
        time.sleep(0.25)
        fresh = nonce not in self.spent
        self.spent.add(nonce)
        return fresh


@pytest.mark.anyio
async def test_a_shared_stores_nonce_write_leaves_the_event_loop_free() -> None:
    siwx = SignInWithX(["eip155:31337"], secret=b"k" * 32, nonces=_SlowNonces())
    url = f"{BASE}/articles/{SLUG}"
    account: LocalAccount = Account.create()
    payload = decode_header(await signed_in(account, siwx.declaration(url), url), SiwxPayload)
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(heartbeat)
        assert await siwx.use(payload, url) == account.address
        tasks.cancel_scope.cancel()
    assert ticks >= 8  # the loop ran on while the nonce was written (0 when it blocks)
    with pytest.raises(PaymentRejectedError, match="used already"):
        await siwx.use(payload, url)
