"""Watching a run: plot the metrics history, live in a notebook.

:func:`edc_lab.train.train` calls ``callback(record, history)`` after every
step and every validation. :class:`LivePlot` is such a callback: it redraws
two panels — the loss terms against the step, and the validation mIoU (all,
cloudy and clear pixels) — in one notebook output that it updates in place::

    live = LivePlot(every=25)
    history = train(config, callback=live)
    live.figure  # the final plot

Outside a notebook it only keeps the figure (``plot_history`` draws the same
panels from any saved ``history.json``). Our choice; nothing here is from the paper.
"""

from __future__ import annotations

import matplotlib.pyplot as plt


def plot_history(history: list[dict], axes=None, title: str | None = None):
    """Two panels from a metrics history: training losses and validation mIoU. Returns the figure."""
    if axes is None:
        figure, axes = plt.subplots(1, 2, figsize=(9, 3))
    else:
        figure = axes[0].figure
    loss_axis, miou_axis = axes
    loss_axis.clear()
    miou_axis.clear()
    train = [r for r in history if r["split"] == "train"]
    val = [r for r in history if r["split"] == "val"]
    steps = [r["step"] for r in train]
    for key in sorted({k for r in train for k in r if k.startswith("loss")}):
        values = [r.get(key) for r in train]
        loss_axis.plot(steps, values, lw=1.5 if key == "loss" else 0.8, label=key.replace("loss_", "") if key != "loss" else "total")
    loss_axis.set(xlabel="step", ylabel="loss", yscale="log")
    if train:
        loss_axis.legend(fontsize=7, loc="upper right")
    for key, style in (("miou", "-o"), ("miou_cloudy", "--s"), ("miou_clear", ":^")):
        miou_axis.plot([r["step"] for r in val], [r[key] for r in val], style, ms=3, label=key.replace("miou_", "") if key != "miou" else "all")
    miou_axis.set(xlabel="step", ylabel="validation mIoU", ylim=(0, 1))
    if val:
        miou_axis.legend(fontsize=7, loc="lower right")
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


class LivePlot:
    """A ``train`` callback that redraws :func:`plot_history` every ``every`` steps and at each validation."""

    def __init__(self, every: int = 25, title: str | None = None, figsize=(9, 3)):
        self.every = every
        self.title = title
        self.figure, self.axes = plt.subplots(1, 2, figsize=figsize)
        plt.close(self.figure)  # shown through the display handle, not by the notebook's auto-display
        self.handle = None

    def __call__(self, record: dict, history: list[dict]) -> None:
        if record["split"] == "train" and record["step"] % self.every:
            return
        plot_history(history, self.axes, self.title)
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:  # pragma: no cover - plain Python without IPython
            return
        if get_ipython() is None:
            return
        if self.handle is None:
            self.handle = display(self.figure, display_id=True)
        else:
            self.handle.update(self.figure)
