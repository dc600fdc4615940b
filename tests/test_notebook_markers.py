"""The notebooks' nbval markers are read by nbval itself the way we mean them.

nbval recognises a comment marker only when the *whole* comment line is the marker
(``# NBVAL_IGNORE_OUTPUT``): a reason on the same line turns it into an ordinary
comment, and the cell's output is then compared digit by digit. This module runs
nbval's own parser (``nbval.plugin.find_comment_markers``) over every code cell and
fails on any comment line that starts with ``NBVAL`` but is not a marker nbval knows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nbval.plugin import comment_markers, find_comment_markers

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def nbval_comment_lines(source: str) -> list[str]:
    """The comment lines of a cell whose text starts with ``NBVAL`` (stripped of ``#`` and blanks)."""
    comments = (line.strip() for line in source.splitlines())
    return [line.lstrip("#").strip() for line in comments if line.startswith("#") and line.lstrip("#").strip().upper().startswith("NBVAL")]


def misread_markers(source: str) -> list[str]:
    """The ``# NBVAL...`` lines of a cell that nbval's parser does not take as markers."""
    recognised = {comment for comment in comment_markers}
    found = list(find_comment_markers(source))
    wanted = nbval_comment_lines(source)
    bad = [line for line in wanted if line not in recognised]
    # every well-formed marker line must also have produced a marker in nbval's own parser
    if len(found) < len(wanted) - len(bad):
        bad.append(f"nbval found {len(found)} marker(s) in a cell with {len(wanted) - len(bad)} marker line(s)")
    return bad


def code_cells(path: Path):
    notebook = json.loads(path.read_text())
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            yield index, "".join(cell["source"]), cell.get("metadata", {}).get("tags", [])


def test_the_checker_catches_a_reason_on_the_marker_line():
    # the form that silently disabled the markers in notebooks 05 and 06
    assert misread_markers("# NBVAL_IGNORE_OUTPUT  (timings vary)\nprint(1)") == ["NBVAL_IGNORE_OUTPUT  (timings vary)"]
    assert misread_markers("#NBVAL_IGNORE_OUPTUT\nprint(1)") == ["NBVAL_IGNORE_OUPTUT"]
    assert misread_markers("# NBVAL_IGNORE_OUTPUT\n# (timings vary)\nprint(1)") == []
    assert dict(find_comment_markers("# NBVAL_IGNORE_OUTPUT\n# (timings vary)")) == {"check": False}


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 6, f"expected the notebook series in notebooks/, found {[p.name for p in NOTEBOOKS]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_nbval_comment_is_a_marker_nbval_reads(path):
    problems = [
        f"{path.name} cell {index}: {line!r}"
        for index, source, _ in code_cells(path)
        for line in misread_markers(source)
    ]
    assert not problems, (
        "these comment lines start with NBVAL but nbval does not read them as markers "
        "(put the marker alone on its line and the reason on the next):\n" + "\n".join(problems)
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_nbval_tags_are_spelled_as_nbval_knows_them(path):
    known = {"nbval-ignore-output", "nbval-check-output", "nbval-raises-exception", "nbval-skip", "raises-exception"}
    problems = [
        f"{path.name} cell {index}: tag {tag!r}"
        for index, _, tags in code_cells(path)
        for tag in tags
        if tag.lower().startswith("nbval") and tag not in known
    ]
    assert not problems, "unknown nbval cell tags:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_do_not_pin_the_thread_count(path):
    # the nbval suite is run with OMP_NUM_THREADS=1 and 2 to stand in for another CPU; a notebook that
    # calls torch.set_num_threads would make that check meaningless
    pinned = [index for index, source, _ in code_cells(path) if "set_num_threads" in source]
    assert not pinned, f"{path.name}: cells {pinned} call torch.set_num_threads; let OMP_NUM_THREADS decide"
