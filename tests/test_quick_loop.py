"""The quick loop's guard (tests/conftest.py): a test that starts a process and is not marked
slow fails, so `pytest -m "not slow"` stays free of processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

SPAWNING = """
import multiprocessing
import subprocess
import sys

import pytest


def test_unmarked_subprocess():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_unmarked_child():
    multiprocessing.get_context("spawn").Process(target=print).start()


@pytest.mark.slow
def test_marked():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
"""


@pytest.mark.slow  # the tests it runs start processes, and are marked or refused by its own
def test_a_test_that_starts_a_process_unmarked_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", os.environ["XDG_DATA_HOME"])  # the conftest sets it
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    slow: starts a process\n")
    pytester.makepyfile(test_spawning=SPAWNING)

    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*test_unmarked_subprocess starts a process: mark it @pytest.mark.slow*",
            "*test_unmarked_child starts a process: mark it @pytest.mark.slow*",
        ],
        consecutive=False,
    )
