"""The articles a server sells: Markdown files with YAML front matter, loaded once at startup.

An article lives in ``<slug>.md`` (the slug: lowercase letters, digits and inner hyphens); its
front matter is described in `agent_pay.server.front_matter`. Loading is strict because a typo
here mis-prices content or pays the wrong person: an unknown key, a missing title, a bad address
or price, a missing block or a duplicate slug each raise `CatalogueError` naming the file and
the problem.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from types import MappingProxyType

from eth_utils.address import is_address, is_checksum_address, to_checksum_address

from agent_pay.assets import parse_amount
from agent_pay.errors import ConfigurationError
from agent_pay.server.front_matter import DEFAULT_PRICE, DEFAULT_TOKENS, read_front_matter
from agent_pay.server.preview import split_preview

__all__ = [
    "DEFAULT_PRICE",
    "DEFAULT_TOKENS",
    "Article",
    "Catalogue",
    "CatalogueError",
    "load_article",
    "parse_article",
]

_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_SYMBOL = re.compile(r"[A-Za-z][A-Za-z0-9]{0,15}")


class CatalogueError(ConfigurationError, ValueError):
    """An article file cannot be loaded; ``source`` names the file, ``problem`` says why."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem

    def __reduce__(self) -> tuple[type[CatalogueError], tuple[str, str]]:
        # The default rebuilds from the joined message, which no longer fits __init__.
        return type(self), (self.source, self.problem)


@dataclass(frozen=True, kw_only=True)
class Article:
    """One article for sale. Constructing it checks its invariants (raising ``ValueError``).

    ``prices`` maps token symbol to price in token units, in the author's offer order.
    """

    slug: str
    title: str
    author: str
    author_name: str | None = None
    summary: str | None = None
    tags: tuple[str, ...] = ()
    body: str
    prices: Mapping[str, Decimal] = field(hash=False)

    def __post_init__(self) -> None:
        if not _SLUG.fullmatch(self.slug):
            raise ValueError(f"bad slug {self.slug!r}: use a-z, 0-9 and inner hyphens")
        if not self.title.strip():
            raise ValueError("title is empty")
        if not is_address(self.author):
            raise ValueError(f"author {self.author!r} is not an address")
        # Mixed case claims an EIP-55 checksum; a wrong one is a typo, and typos lose money.
        digits = self.author.removeprefix("0x")
        if digits not in (digits.lower(), digits.upper()) and not is_checksum_address(self.author):
            raise ValueError(f"author {self.author!r} has a wrong EIP-55 checksum")
        if not self.body.strip():
            raise ValueError("body is empty")
        if not self.prices:
            raise ValueError("no token to pay with")
        for symbol, price in self.prices.items():
            if not _SYMBOL.fullmatch(symbol):
                raise ValueError(f"bad token symbol {symbol!r}")
            if not price.is_finite() or price <= 0:
                raise ValueError(f"price for {symbol} must be positive and finite, got {price}")
        # Normalise and freeze: the checksum form is what goes on the wire as payTo.
        object.__setattr__(self, "author", to_checksum_address(self.author))
        object.__setattr__(self, "prices", MappingProxyType(dict(self.prices)))

    def price_atomic(self, symbol: str, decimals: int) -> int:
        """The price in ``symbol``'s atomic units, given the token's ``decimals``.

        Raises:
            KeyError: if the article is not sold for ``symbol``.
            ValueError: if the price is finer than the token can count.
        """
        if symbol not in self.prices:
            raise KeyError(f"{self.slug} is not sold for {symbol}")
        return parse_amount(self.prices[symbol], decimals)

    @cached_property
    def _split(self) -> tuple[str, str]:
        return split_preview(self.body)

    @property
    def preview(self) -> str:
        """The free part: about the first third, cut at a paragraph, sentence or word boundary."""
        return self._split[0]

    @property
    def remainder(self) -> str:
        """The paid part; ``preview + remainder == body``."""
        return self._split[1]


def parse_article(text: str, slug: str, source: str | None = None) -> Article:
    """Build an `Article` from a file's text; raises `CatalogueError` naming ``source``.

    ``source`` (default ``<slug>.md``) is how errors name the file.
    """
    where = source or f"{slug}.md"
    try:
        meta, body = read_front_matter(text)
        return Article(
            slug=slug,
            title=meta.title,
            author=meta.author,
            author_name=meta.author_name,
            summary=meta.summary,
            tags=meta.tags,
            body=body,
            prices=meta.prices,
        )
    except ValueError as error:
        raise CatalogueError(where, str(error)) from None


def load_article(path: Path) -> Article:
    """Load one ``<slug>.md`` file; raises `CatalogueError` if it is unreadable or invalid."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as error:
        raise CatalogueError(str(path), f"cannot read: {error}") from None
    return parse_article(text, path.stem, str(path))


class Catalogue:
    """The articles on sale, by slug; iterates in slug order."""

    def __init__(self, articles: Iterable[Article] = ()) -> None:
        by_slug: dict[str, Article] = {}
        for article in articles:
            if article.slug in by_slug:
                raise CatalogueError(article.slug, "duplicate slug")
            by_slug[article.slug] = article
        self._articles = dict(sorted(by_slug.items()))

    @classmethod
    def from_directory(cls, path: Path) -> Catalogue:
        """Load every ``*.md`` file in ``path`` (not recursive; dotfiles are skipped).

        Raises:
            CatalogueError: on the first file that does not load, or two files with one slug.
        """
        if not path.is_dir():
            raise CatalogueError(str(path), "not a directory")
        seen: dict[str, Path] = {}
        articles = []
        for file in sorted(path.iterdir()):
            if file.name.startswith(".") or file.suffix.lower() != ".md" or not file.is_file():
                continue
            if file.stem in seen:
                problem = f"duplicate slug {file.stem!r} (also {seen[file.stem]})"
                raise CatalogueError(str(file), problem)
            seen[file.stem] = file
            articles.append(load_article(file))
        return cls(articles)

    def get(self, slug: str) -> Article | None:
        """The article with this slug, or None."""
        return self._articles.get(slug)

    def list(self) -> builtins.list[Article]:
        """All articles, sorted by slug."""
        return builtins.list(self._articles.values())

    def check_tokens(self, decimals: Mapping[str, int]) -> None:
        """Fail fast unless every price is payable: a known token, and no finer than its decimals.

        ``decimals`` maps each accepted token symbol to its decimals. Raises `CatalogueError`
        naming the first article priced in an unknown token or too finely.
        """
        for article in self:
            for symbol in article.prices:
                if symbol not in decimals:
                    known = ", ".join(sorted(decimals)) or "none"
                    problem = f"token {symbol} is not accepted here (known: {known})"
                    raise CatalogueError(f"{article.slug}.md", problem)
                try:
                    article.price_atomic(symbol, decimals[symbol])
                except ValueError as error:
                    raise CatalogueError(f"{article.slug}.md", str(error)) from None

    def __iter__(self) -> Iterator[Article]:
        return iter(self._articles.values())

    def __len__(self) -> int:
        return len(self._articles)

    def __contains__(self, slug: object) -> bool:
        return slug in self._articles
