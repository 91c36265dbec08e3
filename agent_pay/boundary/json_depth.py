"""Bounding JSON nesting before any parser sees the text.

Python's own `json` parser recurses once per level, and py-evm raises the interpreter's recursion
limit far above what the C stack holds: one request of 100,000 nested arrays overflowed the stack
of `agent-pay node` (SIGSEGV, no log line). `check_json_depth` finds the depth without recursing
and without a Python loop per byte: it removes the strings (a regex), turns each opening bracket
into 2 and each closing one into 0 and drops everything else (`bytes.translate`), and takes the
running sum less one per bracket (C iterators): the depth after each bracket. About 60 ms a
megabyte of brackets, a few microseconds for a real request.

jiter (the payment headers' parser) needs no such check: it stops at 200 levels by itself with an
error, never a crash.
"""

from __future__ import annotations

import operator
import re
from itertools import accumulate
from typing import Final

__all__ = ["DEFAULT_MAX_DEPTH", "JsonShapeError", "check_json_depth"]

DEFAULT_MAX_DEPTH: Final = 64
"""Deeper than any JSON-RPC request or x402 body needs (a batch of calls with access lists is 6)."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class JsonShapeError(ValueError):
    """The text is nested too deeply (`too_deep`), or its brackets do not match (not JSON)."""

    def __init__(self, message: str, *, too_deep: bool) -> None:
        super().__init__(message)
        self.too_deep = too_deep


def check_json_depth(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Raise `JsonShapeError` unless the brackets in ``data`` (outside strings) nest at most
    ``max_depth`` deep and as many close as open (order and kinds are left to the parser)."""
    steps = _STRING.sub(b"", data).translate(_STEPS, _NOT_BRACKETS)
    if not steps:
        return
    if max(map(operator.sub, accumulate(steps), range(1, len(steps) + 1))) > max_depth:
        raise JsonShapeError(f"nested more than {max_depth} levels deep", too_deep=True)
    if 2 * steps.count(2) != len(steps):
        raise JsonShapeError("brackets do not match: not JSON", too_deep=False)
