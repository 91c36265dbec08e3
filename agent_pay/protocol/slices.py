"""Slices of a channel's cumulative total: the (low, high] ranges signed in vouchers that no
read has paid for. The payer's client keeps them so that a later read reuses them instead of
paying twice; the payee's account keeps them so that a later voucher may pay into them
(`agent_pay.facilitator.channel.book`). One arithmetic for both sides; pure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["fits", "holding", "merge", "subtract"]


def fits(ranges: Iterable[Sequence[int]], price: int) -> bool:
    """Whether one of `ranges` is wide enough to pay `price`."""
    return any(high - low >= price for low, high in ranges)


def holding(ranges: Sequence[Sequence[int]], low: int, high: int) -> int:
    """The index of the range in `ranges` that holds all of (low, high]; -1 if none does."""
    for index, (start, end) in enumerate(ranges):
        if start <= low and high <= end:
            return index
    return -1


def merge(ranges: Iterable[Sequence[int]]) -> list[list[int]]:
    """`ranges` sorted, with empty ones dropped and overlapping or touching ones joined."""
    merged: list[list[int]] = []
    for low, high in sorted([int(a), int(b)] for a, b in ranges):
        if high <= low:
            continue
        if merged and low <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return merged


def subtract(ranges: Iterable[Sequence[int]], cuts: Iterable[tuple[int, int]]) -> list[list[int]]:
    """`ranges` with every `cuts` range taken out."""
    out = [[int(a), int(b)] for a, b in ranges]
    for cut_low, cut_high in cuts:
        pieces: list[list[int]] = []
        for low, high in out:
            if cut_high <= low or high <= cut_low:
                pieces.append([low, high])
                continue
            if low < cut_low:
                pieces.append([low, cut_low])
            if cut_high < high:
                pieces.append([cut_high, high])
        out = pieces
    return out
