r"""Where an article's free preview ends and the paid remainder begins, in any script.

`split_preview(body)` cuts the body in two so that ``preview + remainder == body`` exactly. Lengths
are counted in *graphemes* (user-perceived characters, Unicode's extended grapheme clusters as the
`regex` package's ``\X`` finds them), so an emoji ZWJ sequence, a flag, a Hangul syllable of
conjoining jamo or a letter with its combining marks counts once and is never split. The rule, in
order:

1. The target is ``fraction`` of the body's graphemes (a third by default); the *share* the
   preview may never exceed is ``MAX_OVERSHOOT * fraction`` of them (40% at the default third).
   A cut is only ever made at a grapheme boundary.
2. A *cut* is made at the end of a run of whitespace (the preview ends with that whitespace and the
   remainder starts with a non-whitespace character), or right after a full-width sentence stop
   (``。！？``, with any closing quotes or brackets after it) or clause mark (``、，；``), as
   written where the script puts no space between words: Chinese and Japanese. Thai, Arabic,
   Devanagari and the Latin scripts put spaces between words or phrases, so whitespace finds
   their boundaries (Thai between phrases and sentences).
3. Cuts inside a fenced code block (```` ``` ```` or ``~~~``) are ignored while any other cut
   exists.
4. Each cut has a strength: a *paragraph* boundary (the whitespace holds a blank line), else a
   *sentence* boundary (the text before it ends in ``.``, ``!``, ``?``, ``。``, ``！``, ``？``,
   ``।`` or ``؟``, optionally followed by closing quotes or brackets), else a plain *word*
   boundary (a clause mark counts as one). A cut right after a Markdown heading line, or after
   text ending in ``:``, is only a word boundary: a heading or an introduction ("it looks like
   this:") belongs with what follows it.
5. Take the paragraph boundary closest to the target if one lies within ``PARAGRAPH_TOLERANCE``
   of it (relative to the target); else the closest sentence-or-paragraph boundary within
   ``SENTENCE_TOLERANCE``; else the closest boundary of any kind. Only cuts within the share
   count. Ties go to the earlier cut: when in doubt, give away less.
6. A body with no cut within the share (one long word, a text in a script without spaces and no
   punctuation) is cut at the grapheme boundary nearest the target, mid-word if need be: the rest
   is paid content, and it is never given away for want of a space.

Whitespace at the end of the body is left out of the count: the rule applies to the text before it,
which then ends the remainder.

So the preview never holds more than the share, and is empty only when the share is less than one
grapheme (at the default third: a body of fewer than three graphemes).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Iterator
from enum import IntEnum
from typing import NamedTuple

import regex

__all__ = [
    "DEFAULT_FRACTION",
    "MAX_OVERSHOOT",
    "PARAGRAPH_TOLERANCE",
    "SENTENCE_TOLERANCE",
    "grapheme_edges",
    "preview_share",
    "split_preview",
]

DEFAULT_FRACTION = 1 / 3
"""The share of the body given away free."""

MAX_OVERSHOOT = 1.2
"""The preview never holds more than this times ``fraction`` of the graphemes (40% of a third)."""

PARAGRAPH_TOLERANCE = 0.25
"""How far (as a share of the target length) a paragraph boundary may sit from the target."""

SENTENCE_TOLERANCE = 0.15
"""How far (as a share of the target length) a sentence boundary may sit from the target."""

_GAP = re.compile(r"\s+")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"[ \t]{0,3}#{1,6}(?:[ \t]|$)", re.MULTILINE)
_GRAPHEME = regex.compile(r"\X")
# Full-width stops and clause marks of scripts written without spaces (Chinese, Japanese), with
# the closing quotes and brackets that may follow them: the cut goes after those.
_CJK_STOP = re.compile(
    r"[\u3002\uff01\uff1f\uff61][\u300d\u300f\uff09\u3011\u3009\u300b\u201d\u2019]*"
)
_CJK_CLAUSE = re.compile(r"[\u3001\uff0c\uff1b][\u300d\u300f\uff09\u3011\u3009\u300b]*")
# Sentence stops: Latin, full-width (CJK), the Devanagari danda and the Arabic question mark.
_SENTENCE_ENDS = frozenset(".!?\u3002\uff01\uff1f\uff61\u0964\u0965\u061f")
# Closing marks that may follow a sentence's final stop: `"Done."` and `(see above.)` end sentences.
_CLOSERS = frozenset("\"')]}*_\u2019\u201d\u00bb\u300d\u300f\uff09\u3011\u3009\u300b")


class _Strength(IntEnum):
    WORD = 0
    SENTENCE = 1
    PARAGRAPH = 2


class _Cut(NamedTuple):
    at: int
    strength: _Strength
    fenced: bool


def grapheme_edges(text: str) -> list[int]:
    """The offsets (in code points) where ``text``'s graphemes start, and ``len(text)``."""
    return [match.start() for match in _GRAPHEME.finditer(text)] + [len(text)]


def preview_share(graphemes: int, fraction: float = DEFAULT_FRACTION) -> int:
    """The most graphemes a preview of a ``graphemes``-long body may hold."""
    return min(graphemes, math.floor(graphemes * fraction * MAX_OVERSHOOT + 1e-9))


def split_preview(body: str, fraction: float = DEFAULT_FRACTION) -> tuple[str, str]:
    """Split ``body`` into ``(preview, remainder)`` at the boundary nearest ``fraction`` of it.

    The module docstring states the rule. ``preview + remainder == body`` always holds, the cut
    is a grapheme boundary, and the preview holds at most `preview_share` graphemes.

    Raises:
        ValueError: if ``fraction`` is not strictly between 0 and 1.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be strictly between 0 and 1, got {fraction!r}")
    # Whitespace at the end (a file ending in blank lines) is no part of the text: counted, it
    # would let the preview hold most of a short one. The share is of the text before it.
    text = body.rstrip()
    if text and len(text) < len(body):
        preview, _ = split_preview(text, fraction)
        return _split_at(body, len(preview))
    edges = grapheme_edges(body)
    graphemes = len(edges) - 1
    limit = edges[preview_share(graphemes, fraction)]
    target = edges[math.floor(graphemes * fraction)]
    boundaries = set(edges)
    cuts = [cut for cut in _cuts(body) if cut.at <= limit and cut.at in boundaries]
    if not cuts:
        return _split_at(body, _fallback(body, edges, limit, target))
    candidates = [cut for cut in cuts if not cut.fenced] or cuts
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


def _fallback(body: str, edges: list[int], limit: int, target: int) -> int:
    """No word or sentence boundary within the share: the grapheme boundary nearest the target,
    holding at least one grapheme (and some text, not only leading whitespace) when it can."""
    allowed = [at for at in edges if 0 < at <= limit]
    if not allowed:
        return 0
    lead = len(body) - len(body.lstrip())
    with_text = [at for at in allowed if at > lead]
    return _closest(with_text or allowed, target)


def _split_at(body: str, at: int) -> tuple[str, str]:
    return body[:at], body[at:]


def _closest(positions: list[int], target: float) -> int:
    return min(positions, key=lambda at: (abs(at - target), at))


def _cuts(body: str) -> Iterator[_Cut]:
    """Every admissible cut: the end of each whitespace run with text on both sides, and the end
    of each full-width stop or clause mark followed by text."""
    fences = _fenced_spans(body)
    line_start = 0
    for gap in _GAP.finditer(body):
        start, end = gap.span()
        if start > 0 and end < len(body):
            yield _Cut(end, _strength(body, start, gap.group(), line_start), _inside(fences, end))
        newline = gap.group().rfind("\n")
        if newline >= 0:
            line_start = start + newline + 1
    for pattern, strength in ((_CJK_STOP, _Strength.SENTENCE), (_CJK_CLAUSE, _Strength.WORD)):
        for mark in pattern.finditer(body):
            end = mark.end()
            if end < len(body):  # also before whitespace: its run's end may be past the share
                yield _Cut(end, strength, _inside(fences, end))


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
