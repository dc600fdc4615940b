"""Every number the notebooks' prose quotes is computed above it.

A number typed into a markdown cell goes stale silently: the model, the data or the evidence
changes, the cell above prints something else, and the reader is told one thing and shown
another. The rule of the series: a number with a decimal point or a per cent sign in a markdown
cell must appear in the source or in the stored outputs of a code cell *above* it in the same
notebook (read from the committed evidence JSON where it is evidence). Exempt: inline and display
maths (``$...$``: equations, not measurements), link targets and URLs, and arXiv identifiers.

The match is textual, on the number as written: ``0.75`` in prose needs ``0.75`` printed (not
``0.754``), so prose and output agree to the digit the prose shows. A per cent value ``40 %``
is also found as the fraction ``0.4``/``0.40`` or as ``40`` followed by ``%``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

_MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.DOTALL)
_LINK_TARGET = re.compile(r"\]\([^)]*\)")
_URL = re.compile(r"(?:https?://|www\.)\S+")
_ARXIV = re.compile(r"\b(?:arXiv[: ]?)?\d{4}\.\d{4,5}(?:v\d+)?\b", re.IGNORECASE)
# a decimal number (optionally signed), or a number followed by a per cent sign
_NUMBER = re.compile(r"(?<![\w.])[+\-−]?(\d+\.\d+|\d+(?:\.\d+)?(?=\s?%))(\s?%)?")


def quoted_numbers(markdown: str) -> list[str]:
    """The numbers a markdown text quotes (``'0.75'``, ``'7.2%'``), maths, links and arXiv ids removed."""
    text = _MATH.sub(" ", markdown)
    text = _LINK_TARGET.sub("]", text)
    text = _URL.sub(" ", text)
    text = _ARXIV.sub(" ", text)
    return [match.group(1) + ("%" if match.group(2) else "") for match in _NUMBER.finditer(text)]


def _present(number: str, corpus: str) -> bool:
    def occurs(literal: str, suffix: str = r"(?!\d)") -> bool:
        return re.search(r"(?<![\d.])" + re.escape(literal) + suffix, corpus) is not None

    if not number.endswith("%"):
        return occurs(number)
    value = number[:-1]
    if re.search(r"(?<![\d.])" + re.escape(value) + r"\s?%", corpus) or occurs(value):
        return True
    fraction = float(value) / 100
    candidates = {f"{fraction:g}", f"{fraction:.2f}", f"{fraction:.3f}", f"{fraction:.4f}"}
    return any(occurs(candidate) for candidate in candidates)


def _cell_text(cell: dict) -> str:
    parts = ["".join(cell.get("source", ""))]
    for output in cell.get("outputs", []):
        if "text" in output:
            parts.append("".join(output["text"]))
        for kind in ("text/plain", "text/markdown", "text/html"):
            if kind in output.get("data", {}):
                parts.append("".join(output["data"][kind]))
    return "\n".join(parts)


def unsupported_numbers(notebook: dict) -> list[tuple[int, str]]:
    """(cell index, number) for every number in a markdown cell that no code cell above shows."""
    corpus, missing = [], []
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            corpus.append(_cell_text(cell))
        elif cell["cell_type"] == "markdown":
            above = "\n".join(corpus).replace("−", "-")
            for number in quoted_numbers("".join(cell["source"]).replace("−", "-")):
                if not _present(number, above):
                    missing.append((index, number))
    return missing


def test_the_checker_finds_a_number_quoted_but_not_computed():
    def notebook(*cells):
        return {"cells": [{"cell_type": kind, "source": text, "outputs": outputs} for kind, text, outputs in cells]}

    printed = [{"output_type": "stream", "name": "stdout", "text": "mIoU 0.754, cover 0.4\n"}]
    assert unsupported_numbers(notebook(("code", "print(...)", printed),
                                        ("markdown", "mIoU 0.754 at 40 % cover", []))) == []
    # rounded differently from the output, or quoted before it is computed: both caught
    assert unsupported_numbers(notebook(("code", "print(...)", printed),
                                        ("markdown", "mIoU about 0.75", []))) == [(1, "0.75")]
    assert unsupported_numbers(notebook(("markdown", "mIoU 0.754", []),
                                        ("code", "print(...)", printed))) == [(0, "0.754")]
    # maths, links and arXiv ids are not measurements
    assert quoted_numbers(r"$\epsilon = 10^{-6}$, [paper](https://arxiv.org/abs/2603.20811), arXiv 1412.6550") == []
    assert quoted_numbers("costs −1.27 points, +2.6 ± 1.5 and 7.2 %") == ["1.27", "2.6", "1.5", "7.2%"]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 7, [path.name for path in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_number_in_the_prose_is_computed_above_it(path):
    missing = unsupported_numbers(json.loads(path.read_text(encoding="utf-8")))
    assert not missing, (
        f"{path.name}: numbers in markdown that no code cell above prints, asserts or reads "
        f"(cell index, number): {missing}. Print them from the result they describe, or drop them.")
