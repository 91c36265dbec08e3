"""What the `agent-pay mcp` tools do, apart from MCP: list, preview, buy, and account.

A model calls these through an MCP host; the spending policy is the user's, fixed when the
server starts, and no tool can change it. `buy_article` is safe to repeat: calls for one URL
are serialized in this process, and once an article is bought, `PaymentAuth` re-reads it by
key proof (nothing paid) — there is no idempotency key for a model to get wrong.

Every method returns plain JSON-able data; a refusal raises `ToolRefusal`, whose message is
written for the model (what happened, and that nothing was signed or charged).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from agent_pay.assets import Asset, AssetRegistry, format_amount
from agent_pay.client.auth import PaymentAuth, PaymentRecord
from agent_pay.client.policy import Spending
from agent_pay.client.receipts import ReceiptStore, resource_key
from agent_pay.errors import AgentPayError, NoAcceptableOfferError, PolicyViolationError
from agent_pay.protocol import PaymentRequired, PaymentRequirements
from agent_pay.protocol.codec import PAYMENT_REQUIRED_HEADER, decode_header
from agent_pay.signing import Signer

__all__ = ["PayingAgent", "ToolRefusal"]


class ToolRefusal(Exception):
    """A tool call that did not do what was asked; the message says why, for the model."""


class PayingAgent:
    """The tools' state: one key, one `Spending`, one receipt store, one HTTP client.

    Args:
        signer: pays and proves purchases; the key never leaves it.
        spending: the user's policy and its tally (`Spending.open` to outlive the process).
        receipts: what was bought, for free re-reads (`ReceiptStore.open` likewise).
        assets: the tokens known (on the chain the user trusts), to show prices in their
            units; which of them may be paid is the policy's to say.
        transport: an httpx transport (tests); the network by default.
    """

    def __init__(
        self,
        signer: Signer,
        spending: Spending,
        receipts: ReceiptStore,
        assets: AssetRegistry,
        *,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.signer = signer
        self.spending = spending
        self.receipts = receipts
        self.assets = assets
        self.auth = PaymentAuth(signer, spending, receipts=receipts)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)
        self._locks: dict[str, asyncio.Lock] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the tools -------------------------------------------------------------------------------

    async def list_articles(self, server_url: str) -> dict[str, Any]:
        """The catalogue of an agent-pay content server; free."""
        base = server_url.rstrip("/")
        response = await self._get(_fetchable(f"{base}/articles"))
        if response.status_code != 200:
            raise ToolRefusal(f"{base}/articles answered HTTP {response.status_code}")
        try:
            listed = response.json()["articles"]
            articles = [self._listed(base, entry) for entry in listed]
        except (ValueError, KeyError, TypeError, AttributeError):
            # Not JSON, or JSON of another shape (a number, entries that are not objects...).
            raise ToolRefusal(f"{base} is not an agent-pay content server") from None
        return {"server": base, "articles": articles}

    async def preview_article(self, url: str) -> dict[str, Any]:
        """The free part of an article and what the rest costs; never pays."""
        response = await self._get(_fetchable(url))
        if response.status_code not in (200, 402):
            raise ToolRefusal(f"{url} answered HTTP {response.status_code}")
        body = _json(response)
        offers: list[dict[str, Any]] = []
        if response.status_code == 402 and PAYMENT_REQUIRED_HEADER in response.headers:
            try:
                challenge = decode_header(
                    response.headers[PAYMENT_REQUIRED_HEADER], PaymentRequired
                )
            except AgentPayError as exc:
                raise ToolRefusal(f"{url} sent an unreadable payment challenge: {exc}") from None
            offers = [self._describe(offer) for offer in challenge.accepts]
        return {
            "url": url,
            "title": body.get("title"),
            "preview": body.get("content", ""),
            "complete": response.status_code == 200,
            "offers": offers,
            "bought": self.receipts.bought(url, self.signer.address),
        }

    async def buy_article(self, url: str) -> dict[str, Any]:
        """The whole article: paid within the policy, or re-read free if bought before."""
        async with self._lock_for(_fetchable(url)):
            before = len(self.auth.payments)
            try:
                response = await self._http.get(url, auth=self.auth)
            except (PolicyViolationError, NoAcceptableOfferError) as exc:
                raise ToolRefusal(
                    f"not paying for {url}: {exc.message}. Nothing was signed or paid; the "
                    "spending policy is set by the user and cannot be changed from here."
                ) from None
            except _UNREACHABLE as exc:
                raise ToolRefusal(f"could not read {url}: {exc}") from None
            if response.status_code == 402:
                raise ToolRefusal(
                    f"{url} refused the payment ({_refusal(response)}); nothing was charged"
                )
            if response.status_code != 200:  # a redirect is no article either
                raise ToolRefusal(f"{url} answered HTTP {response.status_code}{_moved(response)}")
            paid = [p for p in self.auth.payments[before:] if p.url == str(response.request.url)]
            unconfirmed = self.receipts.pending(response.request.url, self.signer.address)
        body = _json(response)
        result: dict[str, Any] = {
            "url": url,
            "title": body.get("title"),
            "content": body.get("content", response.text if not body else ""),
        }
        if paid:
            result.update(self._paid(paid[-1]))
        elif unconfirmed is not None:
            # Signed and sent, answered without a settlement: kept in flight (the budget holds
            # it) and sent again on the next read of this URL. Never "free".
            asset = self.assets.find(unconfirmed.offer.network, unconfirmed.offer.asset)
            amount = unconfirmed.offer.amount
            result.update(
                cost=asset.format(amount) if asset else str(amount),
                how="signed and sent, but not confirmed by the server: held in flight against "
                "the budget, and sent again on the next read of this URL",
            )
        elif self.receipts.bought(url, self.signer.address):
            result.update(cost="0", how="re-read free by key proof: bought before")
        else:
            result.update(cost="0", how="free: the server asked for no payment")
        result["budgetLeft"] = self._left()
        return result

    def spending_report(self) -> dict[str, Any]:
        """Spent, in flight, budget and what is left, per token."""
        tokens = []
        for limit in self.spending.policy.limits:
            asset = limit.asset
            spent = self.spending.spent(asset)
            in_flight = self.spending.committed_or_reserved(asset) - spent
            tokens.append(
                {
                    "token": asset.symbol,
                    "spent": _units(asset, spent),
                    "inFlight": _units(asset, in_flight),
                    "budget": _units(asset, limit.budget),
                    "left": _units(asset, self.spending.remaining(asset)),
                    "maxPerPayment": _units(asset, limit.max_per_payment),
                }
            )
        return {"payer": self.signer.address, "tokens": tokens}

    def purchases(self) -> dict[str, Any]:
        """What this key bought, with the servers' signed receipts."""
        payer = self.signer.address
        bought = []
        for stored in self.receipts.receipts(payer):
            receipt = stored.receipt
            asset = self.assets.find(receipt.network, receipt.asset)
            bought.append(
                {
                    "url": stored.url,
                    "paid": asset.format(receipt.amount) if asset else str(receipt.amount),
                    "transaction": receipt.transaction,
                    "payTo": receipt.pay_to,
                    "receipt": json.loads(receipt.to_json()),
                }
            )
        for purchase in self.receipts.purchases(payer):
            if all(b["url"] != purchase.url for b in bought):
                bought.append({"url": purchase.url, "scheme": purchase.scheme, "receipt": None})
        return {"payer": payer, "purchases": bought}

    # -- helpers ---------------------------------------------------------------------------------

    async def _get(self, url: str) -> httpx.Response:
        try:
            return await self._http.get(url)
        except _UNREACHABLE as exc:
            raise ToolRefusal(f"could not reach {url}: {exc}") from None

    def _lock_for(self, url: str) -> asyncio.Lock:
        return self._locks.setdefault(resource_key(url), asyncio.Lock())

    def _listed(self, base: str, entry: dict[str, Any]) -> dict[str, Any]:
        url = f"{base}/articles/{entry.get('slug')}"
        return {
            "url": url,
            "title": entry.get("title"),
            "summary": entry.get("summary"),
            "author": entry.get("authorName") or entry.get("author"),
            "prices": [f"{p.get('price')} {p.get('token')}" for p in entry.get("prices", [])],
            "bought": self.receipts.bought(url, self.signer.address),
        }

    def _describe(self, offer: PaymentRequirements) -> dict[str, Any]:
        asset = self.assets.find(offer.network, offer.asset)
        if self.spending.policy.limit_for(offer) is None or offer.scheme not in self.auth.schemes:
            verdict = "not payable: the user's policy does not pay in this token or scheme"
        else:
            try:
                self.spending.choose([offer], schemes=list(self.auth.schemes))
                verdict = "within your spending policy"
            except (PolicyViolationError, NoAcceptableOfferError) as exc:
                verdict = exc.message
        return {
            "price": asset.format(offer.amount) if asset else f"{offer.amount} of {offer.asset}",
            "scheme": offer.scheme,
            "payTo": offer.pay_to,
            "policy": verdict,
        }

    def _paid(self, record: PaymentRecord) -> dict[str, Any]:
        asset = self.assets.find(record.offer.network, record.offer.asset)
        amount = record.offer.amount
        return {
            "cost": asset.format(amount) if asset else str(amount),
            "how": "paid",
            "transaction": record.transaction,
            "receipt": json.loads(record.receipt.to_json()) if record.receipt else None,
        }

    def _left(self) -> dict[str, str]:
        return {
            lim.asset.symbol: _units(lim.asset, self.spending.remaining(lim.asset))
            for lim in self.spending.policy.limits
        }


# What a URL the model gave can fail with before any answer: httpx's transport errors, and
# InvalidURL (a string httpx cannot parse, e.g. a port out of range), which is not one of them.
_UNREACHABLE = (httpx.HTTPError, httpx.InvalidURL)


def _fetchable(url: str) -> str:
    """`url` if it is an http(s) URL httpx can fetch; else a refusal saying why (a model may
    pass anything: words, a file: URL, a port out of range, a string of any length)."""
    shown = url if len(url) <= 200 else url[:200] + "..."
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError) as exc:
        raise ToolRefusal(f"could not read {shown!r}: not a URL ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ToolRefusal(f"could not read {shown!r}: not an http:// or https:// URL")
    if port is not None and not 0 < port < 65536:
        raise ToolRefusal(f"could not read {shown!r}: port {port} is out of range")
    return url


def _moved(response: httpx.Response) -> str:
    location = response.headers.get("location")
    return f" (redirected to {location})" if response.is_redirect and location else ""


def _units(asset: Asset, atomic: int) -> str:
    return f"{format_amount(atomic, asset.decimals)} {asset.symbol}"


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _refusal(response: httpx.Response) -> str:
    header = response.headers.get(PAYMENT_REQUIRED_HEADER)
    if header:
        try:
            return decode_header(header, PaymentRequired).error or "no reason given"
        except AgentPayError:
            pass
    return str(_json(response).get("error") or "no reason given")
