"""The free-preview split: exact, never mid-word, near a third, and at the best boundary."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_pay.server.preview import PARAGRAPH_TOLERANCE, split_preview

# -- examples: the boundary preference


def test_prefers_a_paragraph_boundary_near_the_third() -> None:
    body = "One two three four five six. Seven eight.\n\n" + "Nine ten eleven. " * 6
    preview, remainder = split_preview(body)
    assert preview == "One two three four five six. Seven eight.\n\n"
    assert remainder.startswith("Nine")


def test_falls_back_to_a_sentence_boundary() -> None:
    body = "Alpha beta gamma. " * 30
    preview, _ = split_preview(body.strip())
    assert preview.endswith(". ")
    assert abs(len(preview) - len(body.strip()) / 3) <= 18


def test_falls_back_to_a_word_boundary() -> None:
    body = " ".join(["word"] * 60)
    preview, remainder = split_preview(body)
    assert preview.endswith(" ")
    assert remainder.startswith("word")
    assert abs(len(preview) - len(body) / 3) <= 5


def test_far_paragraph_boundary_loses_to_a_near_sentence() -> None:
    body = "Short.\n\n" + "Many words here. " * 40
    preview, _ = split_preview(body)
    assert preview != "Short.\n\n"
    assert preview.endswith(". ")


def test_ties_go_to_the_earlier_cut() -> None:
    preview, remainder = split_preview("ab cd ef gh", fraction=0.5)  # cuts at 3 and 6, target 5.5
    assert (preview, remainder) == ("ab cd ", "ef gh")
    preview, _ = split_preview("aa bb cc", fraction=0.5)  # cuts at 3 and 6, target 4
    assert preview == "aa "


def test_never_cuts_inside_a_code_fence() -> None:
    intro = "Here is how it goes. We set things up first.\n\n"
    code = "```python\n" + "\n".join(f"x{i} = compute({i})" for i in range(20)) + "\n```\n\n"
    body = intro + code + "After the code comes the explanation, which is long. " * 10
    preview, remainder = split_preview(body)
    fence_start = len(intro)
    fence_end = len(intro) + len(code)
    assert not fence_start < len(preview) < fence_end - 2
    assert preview + remainder == body


def test_a_body_that_is_all_code_still_splits() -> None:
    body = "```\n" + "\n".join(f"line {i}" for i in range(30)) + "\n```"
    preview, remainder = split_preview(body)
    assert preview
    assert remainder
    assert preview + remainder == body


def test_tilde_fences_and_longer_closers_are_fences_too() -> None:
    body = "Intro text here.\n\n~~~~\n" + "code code code\n" * 20 + "~~~~~\n\n" + "Outro. " * 2
    preview, _ = split_preview(body)
    assert len(preview) in {len("Intro text here.\n\n"), body.index("Outro")}


def test_does_not_leave_a_heading_dangling() -> None:
    first = "An opening paragraph that runs for a while and says something useful.\n\n"
    body = first + "## Heading\n\n" + "The section body goes on and on. " * 8
    preview, _ = split_preview(body, fraction=(len(first) + 12) / 330)
    assert not preview.rstrip().endswith("## Heading")


def test_does_not_end_on_an_introduction() -> None:
    body = "A sentence. " * 9 + "It looks like this:\n\n" + "Shown here. " * 30
    preview, _ = split_preview(body)
    assert not preview.rstrip().endswith(":")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", ("", "")),
        ("word", ("word", "")),
        ("  word  ", ("  word  ", "")),
        ("   ", ("   ", "")),
        ("two words", ("two ", "words")),
        ("  two words", ("  two ", "words")),
    ],
)
def test_small_bodies(body: str, expected: tuple[str, str]) -> None:
    assert split_preview(body) == expected


@pytest.mark.parametrize("fraction", [0, 1, -0.5, 1.5, float("nan")])
def test_rejects_a_fraction_outside_zero_one(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        split_preview("some words here", fraction)


# -- properties

WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-'", min_size=1, max_size=10)


@st.composite
def sentences(draw: st.DrawFn) -> str:
    words = draw(st.lists(WORDS, min_size=1, max_size=15))
    return " ".join(words) + draw(st.sampled_from(".!?"))


@st.composite
def paragraphs(draw: st.DrawFn) -> str:
    parts = draw(st.lists(sentences(), min_size=1, max_size=6))
    return "".join(part + draw(st.sampled_from([" ", "\n"])) for part in parts).rstrip()


@st.composite
def prose(draw: st.DrawFn, min_size: int = 0) -> str:
    blocks = draw(st.lists(paragraphs(), min_size=1, max_size=12))
    body = "\n\n".join(blocks)
    while len(body) < min_size:
        body += "\n\n" + draw(paragraphs())
    return body


@st.composite
def markdown(draw: st.DrawFn) -> tuple[str, list[tuple[int, int]]]:
    """A document of prose, headings and fenced code; returns it with its fences' spans."""
    kinds = st.sampled_from(["prose", "prose", "heading", "code"])
    body, fences = draw(paragraphs()), []
    for kind in draw(st.lists(kinds, max_size=10)):
        body += "\n\n"
        if kind == "heading":
            body += "## " + " ".join(draw(st.lists(WORDS, min_size=1, max_size=5)))
        elif kind == "code":
            lines = draw(st.lists(st.lists(WORDS, min_size=1, max_size=6), max_size=8))
            block = "```\n" + "".join(" ".join(line) + "\n" for line in lines) + "```"
            fences.append((len(body), len(body) + len(block)))
            body += block
        else:
            body += draw(paragraphs())
    return body, fences


def assert_invariants(body: str, preview: str, remainder: str) -> None:
    assert preview + remainder == body
    if body:
        assert preview
    if body.strip():
        assert preview.strip()
    if len(body.split()) > 1:
        assert remainder
    if preview and remainder:
        # Never mid-word: the two halves never meet between two non-whitespace characters.
        assert preview[-1].isspace() or remainder[0].isspace()
        assert not remainder[0].isspace()


@given(st.text())
def test_any_text_splits_exactly_and_never_mid_word(body: str) -> None:
    assert_invariants(body, *split_preview(body))


@given(st.text(), st.floats(min_value=0.01, max_value=0.99))
def test_any_fraction_keeps_the_invariants(body: str, fraction: float) -> None:
    assert_invariants(body, *split_preview(body, fraction))


@given(markdown())
def test_markdown_never_cuts_inside_a_fence(document: tuple[str, list[tuple[int, int]]]) -> None:
    body, fences = document
    preview, remainder = split_preview(body)
    assert_invariants(body, preview, remainder)
    assert not any(start < len(preview) < end for start, end in fences)


@given(prose(min_size=300))
def test_long_prose_preview_is_near_a_third(body: str) -> None:
    preview, _ = split_preview(body)
    target = len(body) / 3
    # A word tier cut is at most one word plus its gap away (10 + 1 + 2 characters here);
    # the extra character absorbs float rounding at the edge of the paragraph window.
    assert abs(len(preview) - target) <= max(PARAGRAPH_TOLERANCE * target, 13) + 1
    assert preview[-1].isspace()
