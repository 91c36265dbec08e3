"""Where an article's free preview ends and the paid remainder begins.

`split_preview(body)` cuts the body in two so that ``preview + remainder == body`` exactly. The
rule, in order:

1. The target is ``len(body) * fraction`` characters (a third by default).
2. A *cut* is only ever made at the end of a run of whitespace, so the preview ends with that
   whitespace and the remainder starts with a non-whitespace character: never mid-word, never an
   empty or whitespace-only preview, never the whole body when there are two words or more.
3. Cuts inside a fenced code block (```` ``` ```` or ``~~~``) are ignored while any other cut
   exists.
4. Each cut has a strength: a *paragraph* boundary (the whitespace holds a blank line), else a
   *sentence* boundary (the text before it ends in ``.``, ``!`` or ``?``, optionally followed by
   closing quotes or brackets), else a plain *word* boundary. A cut right after a Markdown heading
   line, or after text ending in ``:``, is only a word boundary: a heading or an introduction
   ("it looks like this:") belongs with what follows it.
5. Take the paragraph boundary closest to the target if one lies within ``PARAGRAPH_TOLERANCE``
   of it (relative to the target); else the closest sentence-or-paragraph boundary within
   ``SENTENCE_TOLERANCE``; else the closest boundary of any kind. Ties go to the earlier cut:
   when in doubt, give away less.

So for bodies without code fences the preview length is within ``PARAGRAPH_TOLERANCE * target``
of the target, or within one word-plus-gap of it.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterator
from enum import IntEnum
from typing import NamedTuple

__all__ = [
    "DEFAULT_FRACTION",
    "PARAGRAPH_TOLERANCE",
    "SENTENCE_TOLERANCE",
    "split_preview",
]

DEFAULT_FRACTION = 1 / 3
"""The share of the body given away free."""

PARAGRAPH_TOLERANCE = 0.25
"""How far (as a share of the target length) a paragraph boundary may sit from the target."""

SENTENCE_TOLERANCE = 0.15
"""How far (as a share of the target length) a sentence boundary may sit from the target."""

_GAP = re.compile(r"\s+")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"[ \t]{0,3}#{1,6}(?:[ \t]|$)", re.MULTILINE)
_SENTENCE_ENDS = frozenset(".!?")
# Closing marks that may follow a sentence's final stop: `"Done."` and `(see above.)` end sentences.
_CLOSERS = frozenset("\"')]}*_\u2019\u201d\u00bb")


class _Strength(IntEnum):
    WORD = 0
    SENTENCE = 1
    PARAGRAPH = 2


class _Cut(NamedTuple):
    at: int
    strength: _Strength
    fenced: bool


def split_preview(body: str, fraction: float = DEFAULT_FRACTION) -> tuple[str, str]:
    """Split ``body`` into ``(preview, remainder)`` at the boundary nearest ``fraction`` of it.

    The module docstring states the rule. ``preview + remainder == body`` always holds; the
    remainder is empty only when the body has fewer than two words.

    Raises:
        ValueError: if ``fraction`` is not strictly between 0 and 1.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be strictly between 0 and 1, got {fraction!r}")
    cuts = list(_cuts(body))
    if not cuts:
        return body, ""
    candidates = [cut for cut in cuts if not cut.fenced] or cuts
    target = len(body) * fraction
    for strength, tolerance in (
        (_Strength.PARAGRAPH, PARAGRAPH_TOLERANCE),
        (_Strength.SENTENCE, SENTENCE_TOLERANCE),
    ):
        near = [
            cut.at
            for cut in candidates
            if cut.strength >= strength and abs(cut.at - target) <= tolerance * target
        ]
        if near:
            return _split_at(body, _closest(near, target))
    return _split_at(body, _closest([cut.at for cut in candidates], target))


def _split_at(body: str, at: int) -> tuple[str, str]:
    return body[:at], body[at:]


def _closest(positions: list[int], target: float) -> int:
    return min(positions, key=lambda at: (abs(at - target), at))


def _cuts(body: str) -> Iterator[_Cut]:
    """Every admissible cut: the end of each whitespace run with text on both sides."""
    fences = _fenced_spans(body)
    line_start = 0
    for gap in _GAP.finditer(body):
        start, end = gap.span()
        if start > 0 and end < len(body):
            yield _Cut(end, _strength(body, start, gap.group(), line_start), _inside(fences, end))
        newline = gap.group().rfind("\n")
        if newline >= 0:
            line_start = start + newline + 1


def _strength(body: str, start: int, gap: str, line_start: int) -> _Strength:
    if _HEADING.match(body, line_start) or body[start - 1] == ":":
        return _Strength.WORD
    if gap.count("\n") >= 2:
        return _Strength.PARAGRAPH
    end = start
    while end > line_start and body[end - 1] in _CLOSERS:
        end -= 1
    if end > line_start and body[end - 1] in _SENTENCE_ENDS:
        return _Strength.SENTENCE
    return _Strength.WORD


def _fenced_spans(body: str) -> list[tuple[int, int]]:
    """The ``(start, end)`` character spans of fenced code blocks, fences included.

    Follows CommonMark closely enough for prose: a fence closes on a line of the same character,
    at least as long, with nothing after it; an unclosed fence runs to the end of the body.
    """
    spans: list[tuple[int, int]] = []
    opened_at: int | None = None
    marker = ""
    position = 0
    for line in body.split("\n"):
        fence = _FENCE.match(line)
        if fence is not None:
            run = fence.group(1)
            if opened_at is None:
                opened_at, marker = position, run
            elif (
                run[0] == marker[0] and len(run) >= len(marker) and not line[fence.end() :].strip()
            ):
                spans.append((opened_at, position + len(line)))
                opened_at = None
        position += len(line) + 1
    if opened_at is not None:
        spans.append((opened_at, len(body)))
    return spans


def _inside(spans: list[tuple[int, int]], at: int) -> bool:
    # Spans are sorted and disjoint, so only the last one starting before `at` can hold it.
    index = bisect_left(spans, (at,)) - 1
    return index >= 0 and at < spans[index][1]
