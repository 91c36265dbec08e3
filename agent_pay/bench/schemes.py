"""Payment schemes as the benchmark and the simulation drive them: one `SchemeKit` per scheme.

The server side of every scheme is wired by `Stack.embedded(schemes=...)` (facilitator handler,
offer builder, routes); a kit adds the client side an agent needs — its `ClientScheme` and the
`PaymentAuth` that pays with it — and the facts a driver must know (how many reads a payer will
make, whether payments must be claimed afterwards). "exact" is always here. "channel" is looked
for at run time: until its modules exist, asking for it raises `SchemeUnavailableError` saying
what is missing.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from agent_pay.chain.base import Chain
from agent_pay.client.auth import PaymentAuth
from agent_pay.client.policy import SpendingPolicy
from agent_pay.client.schemes import ClientScheme, ExactClientScheme
from agent_pay.server.catalogue import Catalogue
from agent_pay.signing import LocalSigner, random_nonce
from agent_pay.stack import Stack

__all__ = [
    "KNOWN_SCHEMES",
    "SchemeKit",
    "SchemeUnavailableError",
    "build_stack",
    "claim_channels",
    "expand_schemes",
    "scheme_kit",
    "unavailable_reason",
]

KNOWN_SCHEMES = ("exact", "channel")

# The modules the channel scheme is made of; all must be importable for it to run.
_CHANNEL_MODULES = (
    "agent_pay.chain.channel",  # the contract
    "agent_pay.facilitator.channel.scheme",  # its SchemeHandler
    "agent_pay.server.channel_offers",  # its OfferBuilder
    "agent_pay.client.channels",  # its ClientScheme
    "agent_pay.assembly.channels",  # how the composition root wires it
)


class SchemeUnavailableError(RuntimeError):
    """The scheme asked for is not part of this installation (yet)."""


class SchemeKit(Protocol):
    """The client side of one payment scheme."""

    @property
    def name(self) -> str: ...

    def client(
        self,
        signer: LocalSigner,
        policy: SpendingPolicy,
        *,
        reads_per_payee: int = 1,
        clock: Callable[[], float] = time.time,
        nonce_factory: Callable[[], bytes] = random_nonce,
    ) -> ClientScheme:
        """How an agent holding `signer` pays this scheme, expecting about `reads_per_payee`
        reads from each payee (a channel sizes its deposit on it)."""
        ...

    def payment_auth(
        self,
        scheme: ClientScheme,
        policy: SpendingPolicy,
        *,
        clock: Callable[[], float] = time.time,
        nonce_factory: Callable[[], bytes] = random_nonce,
        **options: Any,
    ) -> PaymentAuth:
        """The `PaymentAuth` paying with `scheme` (made by `client`) under `policy`;
        `options` go to `PaymentAuth` (decide, on_payment)."""
        ...


class ExactKit:
    """x402 "exact": one EIP-3009 transferWithAuthorization settled per read."""

    name = "exact"

    def client(
        self,
        signer: LocalSigner,
        policy: SpendingPolicy,
        *,
        reads_per_payee: int = 1,
        clock: Callable[[], float] = time.time,
        nonce_factory: Callable[[], bytes] = random_nonce,
    ) -> ClientScheme:
        return ExactClientScheme(signer, clock=clock, nonce_factory=nonce_factory)

    def payment_auth(
        self,
        scheme: ClientScheme,
        policy: SpendingPolicy,
        *,
        clock: Callable[[], float] = time.time,
        nonce_factory: Callable[[], bytes] = random_nonce,
        **options: Any,
    ) -> PaymentAuth:
        signer = getattr(scheme, "signer")  # noqa: B009 - ClientScheme does not promise it
        return PaymentAuth(signer, policy, schemes=[scheme], clock=clock, **options)


class ChannelKit:
    """agent-pay "channel": a deposit per payer and payee, then one voucher per read; the
    payee claims vouchers in batches.

    Args:
        min_expected_reads: open a channel with a payee once this many reads from it are
            expected (1: at the first read).
        exact_fallback: pay "exact" for payees that do not (yet) warrant a channel.
    """

    name = "channel"

    def __init__(self, *, min_expected_reads: int = 1, exact_fallback: bool = False) -> None:
        self.min_expected_reads = min_expected_reads
        self.exact_fallback = exact_fallback

    def client(
        self,
        signer: LocalSigner,
        policy: SpendingPolicy,
        *,
        reads_per_payee: int = 1,
        clock: Callable[[], float] = time.time,
        nonce_factory: Callable[[], bytes] = random_nonce,
    ) -> ClientScheme:
        from agent_pay.client.channels import ChannelClientScheme, ChannelPolicy

        channel_policy = ChannelPolicy(
            deposit_reads=max(1, reads_per_payee), min_expected_reads=self.min_expected_reads
        )
        # A channel's id derives from its salt: deterministic when the nonce factory is.
        return ChannelClientScheme(
            signer, policy, channel_policy=channel_policy, clock=clock, salt_factory=nonce_factory
        )

    def payment_auth(
        self,
        scheme: ClientScheme,
        policy: SpendingPolicy,
        *,
        clock: Callable[[], float] = time.time,
        nonce_factory: Callable[[], bytes] = random_nonce,
        **options: Any,
    ) -> PaymentAuth:
        from agent_pay.client.channels import ChannelClientScheme

        if not isinstance(scheme, ChannelClientScheme):
            raise TypeError("a channel PaymentAuth needs the ChannelClientScheme from client()")
        # As `ChannelClientScheme.payment_auth(nonce_factory=...)`, with the "exact"
        # fallback on the caller's clock (a simulation's), not the channel scheme's.
        schemes: list[ClientScheme] = [scheme]
        if self.exact_fallback:
            schemes.append(
                ExactClientScheme(scheme.signer, clock=clock, nonce_factory=nonce_factory)
            )
        return PaymentAuth(scheme.signer, scheme.spending, schemes=schemes, clock=clock, **options)


def unavailable_reason(name: str) -> str | None:
    """Why scheme `name` cannot run here, or None when it can."""
    if name == "exact":
        return None
    if name == "channel":
        missing = [m for m in _CHANNEL_MODULES if not _importable(m)]
        if missing:
            return "the channel scheme is not available yet (missing: " + ", ".join(missing) + ")"
        return None
    return f"unknown scheme {name!r} (known: {', '.join(KNOWN_SCHEMES)})"


def scheme_kit(name: str, **options: Any) -> SchemeKit:
    """The kit for `name` (`options` go to its constructor); SchemeUnavailableError when it
    cannot run here."""
    reason = unavailable_reason(name)
    if reason is not None:
        raise SchemeUnavailableError(reason)
    return ExactKit() if name == "exact" else ChannelKit(**options)


def expand_schemes(choice: str) -> list[str]:
    """A `--scheme` value (exact, channel or both) as scheme names, in preference order."""
    if choice == "both":
        return ["channel", "exact"]
    if choice in KNOWN_SCHEMES:
        return [choice]
    raise ValueError(f"unknown scheme {choice!r}: use exact, channel or both")


def build_stack(
    schemes: Sequence[str] = ("exact",),
    *,
    articles: Path | Catalogue | None = None,
    chain: Chain | None = None,
    **options: Any,
) -> Stack:
    """`Stack.embedded(...)` offering and settling each of `schemes`, in preference order;
    `options` go to `Stack.embedded` (channel_options, ...).

    Raises SchemeUnavailableError for a scheme that cannot run here.
    """
    for name in schemes:
        scheme_kit(name)  # raises if unavailable
    if list(schemes) == ["exact"]:
        return Stack.embedded(articles=articles, chain=chain, **options)
    embedded: Any = Stack.embedded  # `schemes=` arrives with the channel scheme
    stack: Stack = embedded(articles=articles, chain=chain, schemes=tuple(schemes), **options)
    return stack


def claim_channels(stack: Stack) -> int:
    """Have the payee claim every channel voucher due now; the gas it spent (0 without
    channels)."""
    channels = getattr(stack, "channels", None)
    if channels is None:
        return 0
    outcome = channels.settler.settle()
    return int(outcome.gas_used)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False
