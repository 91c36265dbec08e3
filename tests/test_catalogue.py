"""The article catalogue: the shipped samples, strict front matter, and exact prices."""

from __future__ import annotations

import dataclasses
import pickle
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_pay.assets import parse_amount
from agent_pay.errors import AgentPayError
from agent_pay.server.catalogue import (
    Article,
    Catalogue,
    CatalogueError,
    load_article,
    parse_article,
)

ARTICLES = Path(__file__).resolve().parents[1] / "articles"
ADA = "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955"
BO = "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f"
YUKI = "0x976EA74026E726554dB657fA54763abd0C3a0aa9"
CHEN = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"
AUTHORS = {ADA: "Ada Marsh", BO: "Bo Lindqvist", CHEN: "Chen Wei", YUKI: "Yuki Sato"}

GOOD_HEAD = f'title: "A title"\nauthor: "{ADA}"\n'
BODY = "First paragraph of the body.\n\nSecond paragraph, which is the paid part.\n"


def write(folder: Path, name: str, front_matter: str, body: str = BODY) -> Path:
    path = folder / name
    path.write_text(f"---\n{front_matter}---\n\n{body}", encoding="utf-8")
    return path


# -- the shipped samples


@pytest.fixture(scope="module")
def shipped() -> Catalogue:
    return Catalogue.from_directory(ARTICLES)


def test_shipped_articles_all_load_sorted_by_slug(shipped: Catalogue) -> None:
    slugs = [article.slug for article in shipped]
    assert len(shipped) == 8
    assert slugs == sorted(slugs)
    assert [article.slug for article in shipped.list()] == slugs
    assert slugs == sorted(path.stem for path in ARTICLES.glob("*.md"))


def test_shipped_prices(shipped: Catalogue) -> None:
    prices = {article.slug: dict(article.prices) for article in shipped}
    assert prices == {
        "eip-3009-gasless-transfers": {"USDX": Decimal("0.1"), "CNYX": Decimal("0.7")},
        "history-of-the-paywall": {"CNYX": Decimal("0.1")},
        "http-status-codes-nobody-uses": {"USDX": Decimal("0.1")},
        "pricing-content-for-machine-readers": {"USDX": Decimal("0.1")},
        "reading-a-vyper-contract": {"USDX": Decimal("0.25")},
        "shougaku-kessai-to-yomu-koto": {"USDX": Decimal("0.1")},
        "why-micropayments-failed": {"USDX": Decimal("0.1")},
        "yi-jiao-qian-de-yuedu": {"CNYX": Decimal("0.7")},
    }
    shipped.check_tokens({"USDX": 6, "CNYX": 6})


@pytest.mark.parametrize("slug", sorted(path.stem for path in ARTICLES.glob("*.md")))
def test_each_shipped_article_is_a_real_essay(shipped: Catalogue, slug: str) -> None:
    article = shipped.get(slug)
    assert article is not None
    assert AUTHORS[article.author] == article.author_name
    assert article.title
    assert article.summary
    assert article.tags
    # Words in the scripts that space them; characters in Chinese and Japanese, which do not.
    spaceless = sum(ch >= "\u3000" for ch in article.body)
    assert 700 <= len(article.body.split()) <= 1400 or 1200 <= spaceless <= 3000
    assert not article.body.startswith(("\n", "---"))
    assert article.preview + article.remainder == article.body
    assert 0.25 <= len(article.preview) / len(article.body) <= 0.42
    assert article.preview.endswith("\n\n")  # every sample has a paragraph near the third


@pytest.mark.parametrize("slug", ["yi-jiao-qian-de-yuedu", "shougaku-kessai-to-yomu-koto"])
def test_articles_without_spaces_keep_their_paid_part(shipped: Catalogue, slug: str) -> None:
    article = shipped.get(slug)
    assert article is not None
    assert sum(ch >= "\u3000" for ch in article.body) > 0.8 * len(article.body.replace(" ", ""))
    assert article.remainder
    assert len(article.preview) <= 0.4 * len(article.body)


def test_get_and_contains(shipped: Catalogue) -> None:
    assert shipped.get("no-such-article") is None
    assert "why-micropayments-failed" in shipped
    assert "no-such-article" not in shipped


# -- loading rules


def test_defaults_and_normalisation(tmp_path: Path) -> None:
    write(tmp_path, "plain.md", f'title: "  Plain  "\nauthor: "{ADA.lower()}"\n')
    article = Catalogue.from_directory(tmp_path).get("plain")
    assert article is not None
    assert article.title == "Plain"
    assert article.author == ADA
    assert article.author_name is None
    assert article.summary is None
    assert article.tags == ()
    assert dict(article.prices) == {"USDX": Decimal("0.1")}
    assert article.body == BODY


def test_prices_follow_token_order_with_overrides(tmp_path: Path) -> None:
    front = GOOD_HEAD + 'price: 0.25\ntokens: [CNYX, USDX, EURX]\nprices: {USDX: "0.3"}\n'
    article = load_article(write(tmp_path, "multi.md", front))
    assert list(article.prices.items()) == [
        ("CNYX", Decimal("0.25")),
        ("USDX", Decimal("0.3")),
        ("EURX", Decimal("0.25")),
    ]


@pytest.mark.parametrize(
    ("raw", "expected"), [('"0.1"', "0.1"), ("0.1", "0.1"), ("2", "2"), ("1e-7", "1E-7")]
)
def test_price_spellings(tmp_path: Path, raw: str, expected: str) -> None:
    article = load_article(write(tmp_path, "p.md", GOOD_HEAD + f"price: {raw}\n"))
    assert article.prices["USDX"] == Decimal(expected)


def test_crlf_bom_and_closing_dots(tmp_path: Path) -> None:
    text = f'\ufeff---\r\ntitle: "T"\r\nauthor: "{BO}"\r\n...\r\nBody text here.\r\n'
    (tmp_path / "crlf.md").write_bytes(text.encode())
    article = load_article(tmp_path / "crlf.md")
    assert article.body == "Body text here.\n"


def test_other_files_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, "real.md", GOOD_HEAD)
    (tmp_path / "notes.txt").write_text("not an article")
    (tmp_path / ".draft.md").write_text("not loaded")
    (tmp_path / "sub.md").mkdir()
    assert [article.slug for article in Catalogue.from_directory(tmp_path)] == ["real"]


BAD_FRONT_MATTER = [
    ("", "front matter is empty"),
    ("- a\n- b\n", "must be a mapping"),
    ("title: [unclosed\n", "not valid YAML"),
    (f'author: "{ADA}"\n', "missing required key 'title'"),
    (f'title: ""\nauthor: "{ADA}"\n', "'title' is empty"),
    (f'title: 2024\nauthor: "{ADA}"\n', "'title' must be a string"),
    ('title: "T"\n', "missing required key 'author'"),
    (f'title: "T"\nauthor: {ADA}\n', "'author' must be quoted"),
    ('title: "T"\nauthor: "0x1234"\n', "is not an address"),
    ('title: "T"\nauthor: "Ada Marsh"\n', "is not an address"),
    (f'title: "T"\nauthor: "{ADA.replace("dC", "Dc")}"\n', "wrong EIP-55 checksum"),
    (GOOD_HEAD + "pricee: 0.2\n", "unknown front matter key 'pricee'"),
    (GOOD_HEAD + "summary: [a, b]\n", "'summary' must be a string"),
    (GOOD_HEAD + 'price: "abc"\n', "'price' is not a number"),
    (GOOD_HEAD + 'price: "0"\n', "must be a positive, finite number"),
    (GOOD_HEAD + 'price: "-0.1"\n', "must be a positive, finite number"),
    (GOOD_HEAD + 'price: "NaN"\n', "must be a positive, finite number"),
    (GOOD_HEAD + "price: .inf\n", "must be a positive, finite number"),
    (GOOD_HEAD + "price: true\n", "'price' must be a decimal"),
    (GOOD_HEAD + "price: [1]\n", "'price' must be a decimal"),
    (GOOD_HEAD + 'prices: {CNYX: "0.7"}\n', "'prices' names 'CNYX', which is not in tokens"),
    (GOOD_HEAD + 'tokens: [USDX]\nprices: {USDX: "0"}\n', "'prices.USDX' must be a positive"),
    (GOOD_HEAD + "prices: [USDX]\n", "'prices' must map token symbols"),
    (GOOD_HEAD + "tokens: []\n", "'tokens' is empty"),
    (GOOD_HEAD + "tokens: USDX\n", "'tokens' must be a list"),
    (GOOD_HEAD + "tokens: [USDX, USDX]\n", "'tokens' lists 'USDX' twice"),
    (GOOD_HEAD + "tokens: [US-DX]\n", "bad token symbol 'US-DX'"),
    (GOOD_HEAD + "tags: economics\n", "'tags' must be a list"),
]


@pytest.mark.parametrize(("front_matter", "message"), BAD_FRONT_MATTER)
def test_bad_front_matter(tmp_path: Path, front_matter: str, message: str) -> None:
    path = write(tmp_path, "bad.md", front_matter)
    with pytest.raises(CatalogueError, match=message) as caught:
        Catalogue.from_directory(tmp_path)
    assert caught.value.source == str(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# Just Markdown\n\nNo front matter.\n", "missing front matter"),
        (f"---\n{GOOD_HEAD}\nThe block never closes.\n", "not closed"),
        (f"---\n{GOOD_HEAD}---\n\n  \n", "body is empty"),
    ],
)
def test_bad_file_shape(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "shape.md").write_text(text, encoding="utf-8")
    with pytest.raises(CatalogueError, match=message):
        Catalogue.from_directory(tmp_path)


@pytest.mark.parametrize("name", ["Capital.md", "under_score.md", "v1.2.md", "-dash.md", "a b.md"])
def test_bad_slug(tmp_path: Path, name: str) -> None:
    write(tmp_path, name, GOOD_HEAD)
    with pytest.raises(CatalogueError, match="bad slug") as caught:
        Catalogue.from_directory(tmp_path)
    assert name in str(caught.value)


def test_duplicate_slug(tmp_path: Path) -> None:
    write(tmp_path, "same.md", GOOD_HEAD)
    write(tmp_path, "same.MD", GOOD_HEAD)
    with pytest.raises(CatalogueError, match="duplicate slug 'same'"):
        Catalogue.from_directory(tmp_path)
    article = parse_article(f"---\n{GOOD_HEAD}---\n{BODY}", "same")
    with pytest.raises(CatalogueError, match="duplicate slug"):
        Catalogue([article, article])


def test_unreadable_and_missing(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="not a directory"):
        Catalogue.from_directory(tmp_path / "missing")
    (tmp_path / "latin.md").write_bytes(b"---\ntitle: \xe9\n---\n")
    with pytest.raises(CatalogueError, match="cannot read"):
        Catalogue.from_directory(tmp_path)


def test_catalogue_error_fits_the_error_tree() -> None:
    error = CatalogueError("x.md", "missing title")
    assert isinstance(error, ValueError)
    assert isinstance(error, AgentPayError)
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert (copy.source, copy.problem) == ("x.md", "missing title")


def test_empty_directory_is_an_empty_catalogue(tmp_path: Path) -> None:
    catalogue = Catalogue.from_directory(tmp_path)
    assert len(catalogue) == 0
    assert catalogue.list() == []


# -- the article model


def make(**changes: object) -> Article:
    fields: dict[str, object] = {
        "slug": "a",
        "title": "T",
        "author": ADA,
        "body": "Some body text.",
        "prices": {"USDX": Decimal("0.1")},
    }
    return Article(**(fields | changes))  # type: ignore[arg-type]


def test_article_is_immutable() -> None:
    source = {"USDX": Decimal("0.1")}
    article = make(prices=source)
    source["USDX"] = Decimal(5)
    assert article.prices["USDX"] == Decimal("0.1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        article.title = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        article.prices["USDX"] = Decimal(1)  # type: ignore[index]
    assert hash(article) == hash(make())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"slug": "Bad"}, "bad slug"),
        ({"title": " "}, "title is empty"),
        ({"body": "\n"}, "body is empty"),
        ({"prices": {}}, "no token"),
        ({"prices": {"USDX": Decimal("-1")}}, "positive"),
        ({"prices": {"USDX": Decimal("Infinity")}}, "positive and finite"),
    ],
)
def test_article_checks_its_invariants(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**changes)


@pytest.mark.parametrize(
    ("price", "decimals", "atomic"),
    [
        ("0.1", 6, 100_000),
        ("0.1", 18, 10**17),
        ("0.25", 2, 25),
        ("2", 0, 2),
        ("0.10", 1, 1),
        ("1E-7", 7, 1),
        ("0.123456789012345678901234567890123", 33, 123456789012345678901234567890123),
    ],
)
def test_price_atomic_is_exact(price: str, decimals: int, atomic: int) -> None:
    assert make(prices={"USDX": Decimal(price)}).price_atomic("USDX", decimals) == atomic


@pytest.mark.parametrize(("price", "decimals"), [("0.0000001", 6), ("0.25", 1), ("0.5", 0)])
def test_price_atomic_refuses_to_round(price: str, decimals: int) -> None:
    with pytest.raises(ValueError, match="finer than"):
        make(prices={"USDX": Decimal(price)}).price_atomic("USDX", decimals)


def test_price_atomic_unknown_token_and_bad_decimals() -> None:
    with pytest.raises(KeyError, match="CNYX"):
        make().price_atomic("CNYX", 6)
    with pytest.raises(ValueError, match="decimals"):
        make().price_atomic("USDX", -1)


@given(st.integers(min_value=0, max_value=10**40), st.integers(min_value=0, max_value=40))
def test_parse_amount_inverts_scaling(atomic: int, decimals: int) -> None:
    assert parse_amount(Decimal(f"{atomic}e-{decimals}"), decimals) == atomic


def test_check_tokens(tmp_path: Path) -> None:
    write(tmp_path, "fine.md", GOOD_HEAD + 'price: "0.001"\n')
    catalogue = Catalogue.from_directory(tmp_path)
    catalogue.check_tokens({"USDX": 6})
    with pytest.raises(CatalogueError, match=r"fine\.md: token USDX is not accepted"):
        catalogue.check_tokens({"CNYX": 6})
    with pytest.raises(CatalogueError, match="finer than 2 decimals"):
        catalogue.check_tokens({"USDX": 2})
