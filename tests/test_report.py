"""Plots and the HTML report: valid PNGs, one self-contained page."""

from __future__ import annotations

import base64
import re
import struct
import zlib
from typing import Any

import pytest

pytest.importorskip("matplotlib")

from agent_pay.report.html import simulation_html
from agent_pay.report.plots import PLOTS, simulation_plots
from agent_pay.simulate.engine import simulate
from agent_pay.simulate.market import MarketSpec
from agent_pay.simulate.results import summarize

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    run = simulate(MarketSpec(agents=8, articles=8, days=2, seed=5, reads_per_day=3))
    return summarize(run)


@pytest.fixture(scope="module")
def images(report: dict[str, Any]) -> dict[str, bytes]:
    return simulation_plots(report)


def _check_png(data: bytes) -> tuple[int, int]:
    """Walk every chunk, checking CRCs; return (width, height)."""
    assert data.startswith(PNG_SIGNATURE)
    position, size, chunks = len(PNG_SIGNATURE), (0, 0), []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert zlib.crc32(kind + body) == crc
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        chunks.append(kind)
        position += 12 + length
    assert chunks[0] == b"IHDR"
    assert chunks[-1] == b"IEND"
    assert b"IDAT" in chunks
    return size


def test_every_plot_is_a_valid_png(images: dict[str, bytes]) -> None:
    assert set(images) == set(PLOTS)
    for name, data in images.items():
        width, height = _check_png(data)
        assert width > 300, name
        assert height > 200, name


def test_plots_are_the_same_for_the_same_report(
    report: dict[str, Any], images: dict[str, bytes]
) -> None:
    again = simulation_plots(report)
    for name in ("outcomes", "revenue_by_author", "agent_spend", "daily", "cost_per_read"):
        assert again[name] == images[name], name


def test_html_is_one_self_contained_page(report: dict[str, Any], images: dict[str, bytes]) -> None:
    page = simulation_html(report, images, command="agent-pay simulate --seed 5")
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:|//)""", page)
    assert "<script" not in page
    assert "<link" not in page
    assert "@import" not in page
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(embedded) == len(images)
    for data in embedded:
        _check_png(base64.b64decode(data, validate=True))
    assert report["digest"] in page
    assert "assumptions" in page.lower()


def test_html_escapes_what_it_shows(report: dict[str, Any], images: dict[str, bytes]) -> None:
    page = simulation_html(report, images, command="<script>alert(1)</script>")
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
