"""Where and how a run computes: seeds, deterministic algorithms, the autocast dtype of the device, a progress bar.

Our choices, standard practice: bf16 autocast on GPUs that compute it natively, else fp16 (with a
GradScaler, :mod:`edc_lab.train.loop`); full precision and deterministic algorithms on the CPU; a
``tqdm`` bar whose output in a notebook ends in its final state (:func:`notebook_bar_class`).
"""

from __future__ import annotations

import functools
import random
from contextlib import contextmanager

import numpy as np
import torch

# the autocast dtype of a device lives at layer 0 (prediction and training both use it)
from edc_lab.acceleration import native_bf16, resolve_amp  # noqa: F401


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python's ``random`` (CPU and all GPUs)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextmanager
def deterministic_mode(enabled: bool):
    """``torch.use_deterministic_algorithms(True)`` inside the block, restored after."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def progress_bar(iterable, enabled: bool, description: str, total: int | None = None, initial: int = 0):
    """A ``tqdm.auto`` bar (a widget in Jupyter, text in a terminal), or the iterable itself.

    In Jupyter the bar is :func:`notebook_bar_class`'s: the widget of ``tqdm.notebook`` whose
    output is re-published with its final state when the bar closes, so the text a notebook
    stores beside the widget (what a reader without a kernel, or GitHub, sees) is the finished
    bar, ``300/300``, not the ``0/300`` it showed when it appeared.
    """
    if not enabled:
        return iterable
    return _bar_class()(iterable, desc=description, total=total, initial=initial, leave=True, dynamic_ncols=True)


def _bar_class():
    """``tqdm.auto``'s choice, with the notebook widget replaced by :func:`notebook_bar_class`'s."""
    from tqdm.auto import tqdm

    try:
        from tqdm.notebook import tqdm_notebook
    except ImportError:  # pragma: no cover - tqdm.notebook ships with tqdm
        return tqdm
    return notebook_bar_class() if issubclass(tqdm, tqdm_notebook) else tqdm


@functools.cache
def notebook_bar_class():
    """A ``tqdm.notebook`` bar whose stored output ends in its final state (ours, on tqdm's widget).

    ``tqdm.notebook`` displays its widget once, when the bar starts; the plain-text fallback
    stored with that output (``0%| 0/300``) is never refreshed, although the widget itself
    moves. This bar displays its widget with a display id instead and, when it closes,
    updates that output (``IPython.display.DisplayHandle.update``), which re-renders the text
    from the finished bar (``100%| 300/300``, or where it stopped, for a run that failed).
    """
    from tqdm.notebook import tqdm_notebook

    class FinalStateNotebookBar(tqdm_notebook):
        """``tqdm.notebook.tqdm`` whose output is updated with the final state on ``close()``."""

        def __init__(self, *args, **kwargs):
            kwargs["display"] = False  # displayed below, with a display id
            self._handle = None
            super().__init__(*args, **kwargs)
            if self.disable or not hasattr(self, "container"):
                return
            from IPython.display import display

            self._handle = display(self.container, display_id=True)
            self.displayed = True

        def close(self):
            super().close()
            handle, self._handle = getattr(self, "_handle", None), None
            if handle is not None:
                handle.update(self.container)

    return FinalStateNotebookBar
