"""An article file's YAML front matter, read into typed and checked fields.

The block opens the file::

    ---
    title: "Why Micropayments Failed"   # required
    author: "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955"   # required: the payee; quote it
    author_name: "Ada Marsh"             # optional, display only
    summary: "One sentence."             # optional
    price: "0.1"                         # optional, token units, for every token; default 0.1
    tokens: [USDX, CNYX]                 # optional, accepted stablecoins in offer order
    prices: {CNYX: "0.7"}                # optional per-token overrides (tokens named above)
    tags: [economics, agents]            # optional
    ---

`read_front_matter` splits a file into its front matter and its Markdown body and checks every
field's type. It raises plain ``ValueError`` with a message fit for a person; the catalogue adds
the file name. Parsing uses ``yaml.safe_load`` only: front matter must never build objects.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import yaml

__all__ = ["ALLOWED_KEYS", "DEFAULT_PRICE", "DEFAULT_TOKENS", "FrontMatter", "read_front_matter"]

DEFAULT_PRICE = Decimal("0.1")
"""The price, in token units, when the front matter names none."""

DEFAULT_TOKENS: tuple[str, ...] = ("USDX",)
"""The accepted tokens when the front matter names none."""

ALLOWED_KEYS = frozenset(
    {"title", "author", "author_name", "summary", "price", "tokens", "prices", "tags"}
)

_BLOCK = re.compile(r"---[ \t]*\n(?P<yaml>.*?)^(?:---|\.\.\.)[ \t]*$\n?", re.DOTALL | re.MULTILINE)
_LEADING_BLANK_LINES = re.compile(r"\A(?:[ \t]*\n)+")


@dataclass(frozen=True)
class FrontMatter:
    """The checked fields of one front matter block, defaults applied.

    ``prices`` maps each accepted token symbol to its price in token units, in offer order.
    """

    title: str
    author: str
    author_name: str | None
    summary: str | None
    tags: tuple[str, ...]
    prices: Mapping[str, Decimal]


def read_front_matter(text: str) -> tuple[FrontMatter, str]:
    """Split ``text`` into its front matter and its body (leading blank lines dropped).

    Raises:
        ValueError: if the block is missing, unclosed, not YAML, or any field is wrong.
    """
    text = text.removeprefix("\ufeff")
    block = _BLOCK.match(text)
    if block is None:
        if text.startswith("---"):
            raise ValueError("front matter is not closed by a '---' line")
        raise ValueError("missing front matter: the file must start with a '---' line")
    try:
        meta = yaml.safe_load(block.group("yaml"))
    except yaml.YAMLError as error:
        problem = " ".join(str(error).split())
        raise ValueError(f"front matter is not valid YAML: {problem}") from None
    if meta is None:
        raise ValueError("front matter is empty: 'title' and 'author' are required")
    if not isinstance(meta, dict):
        raise ValueError("front matter must be a mapping of keys to values")
    unknown = sorted(repr(key) for key in meta if key not in ALLOWED_KEYS)
    if unknown:
        allowed = ", ".join(sorted(ALLOWED_KEYS))
        raise ValueError(f"unknown front matter key {', '.join(unknown)} (allowed: {allowed})")
    body = _LEADING_BLANK_LINES.sub("", text[block.end() :])
    front = FrontMatter(
        title=_required_text(meta, "title"),
        author=_required_text(meta, "author"),
        author_name=_optional_text(meta, "author_name"),
        summary=_optional_text(meta, "summary"),
        tags=_text_list(meta, "tags") or (),
        prices=_prices(meta),
    )
    return front, body


def _required_text(meta: dict[str, object], key: str) -> str:
    if key not in meta or meta[key] is None:
        raise ValueError(f"missing required key {key!r}")
    text = _optional_text(meta, key)
    if not text:
        raise ValueError(f"{key!r} is empty")
    return text


def _optional_text(meta: dict[str, object], key: str) -> str | None:
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and key == "author":
        # YAML 1.1 reads an unquoted 0x... as a hexadecimal integer.
        raise ValueError("'author' must be quoted: YAML reads an unquoted 0x... as a number")
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string, got {type(value).__name__} {value!r}")
    return value.strip()


def _text_list(meta: dict[str, object], key: str) -> tuple[str, ...] | None:
    value = meta.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"{key!r} must be a list of non-empty strings, got {value!r}")
    items = tuple(item.strip() for item in value)
    for item in items:
        if items.count(item) > 1:
            raise ValueError(f"{key!r} lists {item!r} twice")
    return items


def _prices(meta: dict[str, object]) -> dict[str, Decimal]:
    tokens = _text_list(meta, "tokens")
    if tokens == ():
        raise ValueError("'tokens' is empty: name at least one token, or leave it out")
    tokens = tokens or DEFAULT_TOKENS
    base = DEFAULT_PRICE if meta.get("price") is None else _price(meta["price"], "price")
    overrides = meta.get("prices") or {}
    if not isinstance(overrides, dict):
        raise ValueError(f"'prices' must map token symbols to prices, got {overrides!r}")
    for symbol in overrides:
        if symbol not in tokens:
            raise ValueError(f"'prices' names {symbol!r}, which is not in tokens {list(tokens)}")
    return {
        symbol: _price(overrides[symbol], f"prices.{symbol}") if symbol in overrides else base
        for symbol in tokens
    }


def _price(value: object, key: str) -> Decimal:
    # Floats are accepted through their shortest repr, so `price: 0.1` means exactly 0.1.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f'{key!r} must be a decimal like "0.1", got {value!r}')
    try:
        price = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{key!r} is not a number: {value!r}") from None
    if not price.is_finite() or price <= 0:
        raise ValueError(f"{key!r} must be a positive, finite number, got {value!r}")
    return price
