"""docs/api.md runs: its examples are doctests on the tiny sample."""

from __future__ import annotations

import doctest
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_the_python_api_page_runs(monkeypatch):
    monkeypatch.chdir(DOC.parents[1])  # its examples read conf/ from the repository root
    result = doctest.testfile(
        str(DOC),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        report=True,
    )
    assert result.attempted > 20
    assert result.failed == 0, f"{result.failed} of the examples in {DOC.name} failed (see above)"
