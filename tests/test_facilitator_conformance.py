"""The `Facilitator` seam, one suite for every implementation (eth-tester style): the in-process
`LocalFacilitator`, and `HttpFacilitatorClient` talking over loopback HTTP to our facilitator
service (`create_facilitator_app` served by uvicorn). Both run the same scheme handlers on one
embedded chain, so whatever one answers, the other must answer the same.

A payment scheme comes as a kit (`ExactKit`): its handler, a good payment, and every way a
payment must be refused with its reason. A scheme joins the suite by adding its kit to `KITS`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import pytest

from agent_pay.chain.contract import Transactor
from agent_pay.chain.devkeys import dev_signer
from agent_pay.chain.embedded import EmbeddedChain
from agent_pay.chain.stablecoin import Stablecoin, deploy_stablecoins
from agent_pay.errors import Reason
from agent_pay.facilitator.base import Facilitator, SchemeHandler
from agent_pay.facilitator.exact import ExactEvmScheme
from agent_pay.facilitator.http import HttpFacilitatorClient, create_facilitator_app
from agent_pay.facilitator.local import LocalFacilitator
from agent_pay.protocol import X402_VERSION, ExactEvmPayload, PaymentPayload, PaymentRequirements
from agent_pay.serving import serve_app
from agent_pay.signing import (
    LocalSigner,
    TokenDomain,
    TransferAuthorization,
    random_nonce,
    sign_transfer_authorization,
    transfer_with_authorization_typed_data,
)
from agent_pay.testing import FakeClock

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000
PRICE = 100_000  # 0.1 of a six-decimal token
PAYEE = LocalSigner.from_key("0x" + "22" * 32).address
BACKENDS = ("local", "http")


@dataclass
class World:
    """One embedded chain with the stock tokens, and the handlers every facilitator runs."""

    chain: EmbeddedChain
    owner: Transactor  # deployed the tokens; mints
    gas_payer: Transactor  # the facilitator's account
    tokens: dict[str, Stablecoin]
    handlers: dict[str, SchemeHandler]  # by scheme name

    def payer(self, funds: int = 10 * PRICE) -> LocalSigner:
        """A fresh key holding `funds` of every token."""
        signer = LocalSigner.random()
        if funds:
            for token in self.tokens.values():
                token.mint(self.owner, signer.address, funds)
        return signer

    def books(self, *addresses: str) -> dict[tuple[str, str], int]:
        """Every token's balance of each address, and its total supply."""
        books = {(a, s): t.balance_of(a) for a in addresses for s, t in self.tokens.items()}
        books.update({("supply", s): t.total_supply() for s, t in self.tokens.items()})
        return books


Payment = tuple[PaymentPayload, PaymentRequirements]  # a payment and what it is checked against


@dataclass(frozen=True)
class Case:
    """A payment a facilitator must refuse with `reason`; with None, one it must settle."""

    name: str
    reason: Reason | None
    make: Callable[[World], Payment]


class SchemeKit(Protocol):
    """What the suite needs of a payment scheme."""

    @property
    def name(self) -> str: ...

    def handler(self, world: World) -> SchemeHandler: ...

    def good(self, world: World) -> Payment:
        """A payment that verifies and settles, from a fresh funded payer."""
        ...

    def moved_by_settle(self, offer: PaymentRequirements) -> int:
        """What settling one payment for `offer` moves from payer to payee there and then."""
        ...

    def refusals(self) -> list[Case]:
        """Every way a payment of this scheme must be refused, with its reason."""
        ...


# -- the exact scheme -----------------------------------------------------------------------------


class ExactKit:
    """x402 "exact": an EIP-3009 authorization, settled by one transfer."""

    name = "exact"

    def handler(self, world: World) -> SchemeHandler:
        return ExactEvmScheme(world.tokens.values(), world.gas_payer)

    def offer(self, world: World, symbol: str = "USDX") -> PaymentRequirements:
        asset = world.tokens[symbol].asset
        return PaymentRequirements(
            scheme="exact",
            network=asset.network,
            amount=PRICE,
            asset=asset.address,
            pay_to=PAYEE,
            max_timeout_seconds=120,
            extra={"name": asset.eip712_name, "version": asset.eip712_version},
        )

    def pay(
        self,
        world: World,
        offer: PaymentRequirements,
        payer: LocalSigner | None = None,
        *,
        signer: LocalSigner | None = None,  # who signs, if not the payer
        **fields: Any,  # TransferAuthorization fields to set
    ) -> PaymentPayload:
        payer = payer or world.payer()
        now = world.chain.next_timestamp()
        auth = TransferAuthorization(
            from_=payer.address,
            to=offer.pay_to,
            value=offer.amount,
            valid_after=now - 60,
            valid_before=now + offer.max_timeout_seconds,
            nonce=random_nonce(),
        )
        auth = replace(auth, **fields)
        domain = TokenDomain.from_requirements(offer)
        if signer is None:
            signature = sign_transfer_authorization(payer, domain, auth)
        else:  # signed by a key that is not the payer's, which the signing API refuses to do
            signature = signer.sign_typed_data(transfer_with_authorization_typed_data(domain, auth))
        payload = ExactEvmPayload(signature="0x" + signature.hex(), authorization=auth.to_wire())
        return PaymentPayload(x402_version=X402_VERSION, accepted=offer, payload=payload.to_wire())

    def paid(
        self,
        world: World,
        *,
        offer: PaymentRequirements | None = None,
        checked: PaymentRequirements | None = None,  # what it is checked against, if not offer
        **pay: Any,
    ) -> Payment:
        offer = offer or self.offer(world)
        return self.pay(world, offer, **pay), checked or offer

    def good(self, world: World) -> Payment:
        return self.paid(world)

    def moved_by_settle(self, offer: PaymentRequirements) -> int:
        return offer.amount  # one transfer per payment

    def refusals(self) -> list[Case]:
        def now(world: World) -> int:
            return world.chain.next_timestamp()

        return [
            Case(
                "bad signature",
                Reason.INVALID_SIGNATURE,
                lambda w: self.paid(w, signer=LocalSigner.random()),
            ),
            Case(
                "expired",
                Reason.VALID_BEFORE_EXPIRED,
                lambda w: self.paid(w, valid_after=now(w) - 600, valid_before=now(w) - 1),
            ),
            Case(
                "not yet valid",
                Reason.VALID_AFTER_FUTURE,
                lambda w: self.paid(w, valid_after=now(w) + 600, valid_before=now(w) + 1200),
            ),
            Case("wrong amount", Reason.AMOUNT_MISMATCH, lambda w: self.paid(w, value=PRICE - 1)),
            Case(
                "wrong asset",
                Reason.ASSET_MISMATCH,
                lambda w: self.paid(w, offer=self.offer(w, "CNYX"), checked=self.offer(w)),
            ),
            Case(
                "wrong payee",
                Reason.RECIPIENT_MISMATCH,
                lambda w: self.paid(w, to=LocalSigner.random().address),
            ),
            Case(
                "wrong network",
                Reason.NETWORK_MISMATCH,
                lambda w: self.paid(
                    w, offer=self.offer(w).model_copy(update={"network": "eip155:1"})
                ),
            ),
            Case("nonce reused", Reason.NONCE_ALREADY_USED, self.nonce_reused),
            Case(
                "insufficient funds",
                Reason.INSUFFICIENT_BALANCE,
                lambda w: self.paid(w, payer=w.payer(funds=0)),
            ),
            Case("malformed", Reason.INVALID_PAYLOAD, self.malformed),
        ]

    def nonce_reused(self, world: World) -> Payment:
        """Another payment (for another price) with the nonce of one already settled. (The
        same transfer signed again is the same payment: settling it returns the earlier one.)"""
        offer, payer, nonce = self.offer(world), world.payer(), random_nonce()
        world.handlers[self.name].settle(self.pay(world, offer, payer, nonce=nonce), offer)
        dearer = offer.model_copy(update={"amount": 2 * PRICE})
        return self.pay(world, dearer, payer, nonce=nonce), dearer

    def malformed(self, world: World) -> Payment:
        payment, offer = self.good(world)
        return payment.model_copy(update={"payload": {"signature": "0x12"}}), offer


KITS: list[SchemeKit] = [ExactKit()]
GOOD = [pytest.param(kit, Case("good", None, kit.good), id=f"{kit.name}-good") for kit in KITS]
REFUSALS = [
    pytest.param(kit, case, id=f"{kit.name}-{case.name}") for kit in KITS for case in kit.refusals()
]


# -- the facilitators -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world() -> World:
    chain = EmbeddedChain(clock=FakeClock(T0))
    owner = Transactor(chain, dev_signer(0))
    world = World(chain, owner, Transactor(chain, dev_signer(1)), deploy_stablecoins(owner), {})
    world.handlers.update({kit.name: kit.handler(world) for kit in KITS})
    return world


@pytest.fixture(scope="module")
def service(world: World) -> Iterator[str]:
    """Our facilitator service on a free loopback port, over the same handlers."""
    with serve_app(create_facilitator_app(LocalFacilitator(world.handlers.values()))) as url:
        yield url


@pytest.fixture
async def facilitators(world: World, service: str) -> AsyncIterator[dict[str, Facilitator]]:
    remote = HttpFacilitatorClient(service)
    try:
        yield {"local": LocalFacilitator(world.handlers.values()), "http": remote}
    finally:
        await remote.aclose()


@pytest.fixture(params=BACKENDS)
def facilitator(
    request: pytest.FixtureRequest, facilitators: dict[str, Facilitator]
) -> Facilitator:
    return facilitators[request.param]


def parties(payment: PaymentPayload) -> list[str]:
    """The payee offered and every address the payload names: whose money a payment may move."""
    fields = payment.payload.get("authorization", {}).values()
    return [PAYEE, *(v for v in fields if isinstance(v, str) and len(v) == 42)]


# -- the suite ------------------------------------------------------------------------------------


async def test_supported_lists_each_scheme_on_the_chain(
    world: World, facilitator: Facilitator
) -> None:
    supported = await facilitator.supported()
    network = world.tokens["USDX"].asset.network
    kinds = {(k.x402_version, k.scheme, k.network) for k in supported.kinds}
    assert kinds == {(X402_VERSION, kit.name, network) for kit in KITS}
    assert world.gas_payer.address in supported.signers["eip155:*"]


@pytest.mark.parametrize(("kit", "case"), GOOD)
async def test_a_good_payment_verifies_then_settles_once(
    world: World, facilitator: Facilitator, kit: SchemeKit, case: Case
) -> None:
    payment, offer = case.make(world)
    symbol = next(s for s, t in world.tokens.items() if t.address == offer.asset)
    verdict = await facilitator.verify(payment, offer)
    assert verdict.is_valid, verdict.invalid_message
    assert verdict.payer is not None
    before = world.books(verdict.payer, offer.pay_to)

    settled = await facilitator.settle(payment, offer)
    assert settled.success, settled.error_message
    assert (settled.payer, settled.network, settled.amount) == (verdict.payer, offer.network, PRICE)
    moved = kit.moved_by_settle(offer)
    assert settled.transaction.startswith("0x") or not moved  # what moved, moved on chain
    after = world.books(verdict.payer, offer.pay_to)
    assert after[verdict.payer, symbol] == before[verdict.payer, symbol] - moved
    assert after[offer.pay_to, symbol] == before[offer.pay_to, symbol] + moved

    assert await facilitator.settle(payment, offer) == settled  # idempotent: the same settlement
    assert world.books(verdict.payer, offer.pay_to) == after  # charged once


@pytest.mark.parametrize(("kit", "case"), REFUSALS)
async def test_a_refused_payment_says_why_and_moves_nothing(
    world: World, facilitator: Facilitator, kit: SchemeKit, case: Case
) -> None:
    payment, requirements = case.make(world)
    before = world.books(*parties(payment))
    verdict = await facilitator.verify(payment, requirements)
    assert (verdict.is_valid, verdict.invalid_reason) == (False, case.reason), verdict
    settled = await facilitator.settle(payment, requirements)
    assert (settled.success, settled.error_reason) == (False, case.reason), settled
    assert settled.transaction == ""
    assert world.books(*parties(payment)) == before


@pytest.mark.parametrize(("kit", "case"), [*GOOD, *REFUSALS])
async def test_both_facilitators_answer_alike(
    world: World, facilitators: dict[str, Facilitator], kit: SchemeKit, case: Case
) -> None:
    payment, requirements = case.make(world)
    local, remote = facilitators["local"], facilitators["http"]
    assert await local.verify(payment, requirements) == await remote.verify(payment, requirements)
    # Settled by one, then asked again of the other: the same answer (idempotent, for "good").
    assert await local.settle(payment, requirements) == await remote.settle(payment, requirements)
