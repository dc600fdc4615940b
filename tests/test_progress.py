"""The training progress bar (edc_lab.train.runtime.progress_bar): what a notebook stores is the finished bar.

A notebook keeps, beside tqdm's widget, a plain-text copy of the bar for readers without a kernel
(GitHub, nbviewer, ``pytest --nbval``'s stored outputs). tqdm writes that copy once, when the bar
appears ("0/300"); our notebook bar updates its output when it closes, so the copy shows the end.
"""

from __future__ import annotations

import IPython.display
import pytest

from edc_lab.train import runtime

pytest.importorskip("ipywidgets")


class Handle:
    """Stands in for IPython's DisplayHandle: records the text of every (re-)display."""

    def __init__(self, shown):
        self.texts = [repr(shown)]

    def update(self, shown):
        self.texts.append(repr(shown))


@pytest.fixture
def displays(monkeypatch):
    handles = []

    def display(shown, display_id=None):
        assert display_id is True, "the bar must be displayed with a display id, or it cannot be updated"
        handles.append(Handle(shown))
        return handles[-1]

    monkeypatch.setattr(IPython.display, "display", display)
    return handles


def test_the_notebook_bar_ends_its_stored_output_in_the_final_state(displays):
    bar = runtime.notebook_bar_class()(range(300), desc="teacher edc_tiny", total=300, leave=True)
    assert len(displays) == 1 and "0/300" in displays[0].texts[0]
    for _ in bar:
        pass
    final = displays[0].texts[-1]
    assert len(displays[0].texts) == 2, displays[0].texts  # updated once, when the loop closed the bar
    assert final.startswith("teacher edc_tiny: 100%") and "300/300" in final
    bar.close()  # the training loop closes it again: nothing more is published
    assert len(displays[0].texts) == 2


def test_a_bar_resumed_from_a_checkpoint_counts_from_its_start(displays):
    bar = runtime.notebook_bar_class()(range(100, 300), desc="student", total=300, initial=100)
    assert "100/300" in displays[0].texts[0]
    for _ in bar:
        pass
    assert "300/300" in displays[0].texts[-1]


def test_an_interrupted_bar_stores_where_it_stopped(displays):
    bar = runtime.notebook_bar_class()(range(300), desc="teacher", total=300)
    for step in bar:
        if step == 41:
            break
    bar.close()
    assert "41/300" in displays[0].texts[-1]  # steps 0..40 done: not 0/300, and not a finished bar


def test_progress_bar_picks_the_notebook_bar_only_in_a_notebook(monkeypatch, displays):
    import tqdm.auto
    import tqdm.notebook
    import tqdm.std

    monkeypatch.setattr(tqdm.auto, "tqdm", tqdm.notebook.tqdm)  # what tqdm.auto picks in a Jupyter kernel
    bar = runtime.progress_bar(range(3), True, "teacher", 3)
    assert isinstance(bar, runtime.notebook_bar_class())
    list(bar)
    assert "3/3" in displays[-1].texts[-1]
    monkeypatch.setattr(tqdm.auto, "tqdm", tqdm.std.tqdm)  # a terminal
    bar = runtime.progress_bar(range(3), True, "teacher", 3)
    assert type(bar) is tqdm.std.tqdm
    list(bar)


def test_a_terminal_bar_prints_the_finished_bar(capsys):
    list(runtime.progress_bar(range(5), True, "teacher edc_tiny", 5))
    assert "5/5" in capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]


def test_a_disabled_bar_is_the_iterable_itself():
    steps = range(4)
    assert runtime.progress_bar(steps, False, "teacher") is steps
