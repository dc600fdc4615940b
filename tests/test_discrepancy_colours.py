"""The colour range of discrepancy-map figures: D's whole 0-1 range, or the map's own range, said on the colourbar.

An untrained ``D`` stays within a few hundredths of 0.5; on a 0-1 scale its picture is one flat colour.
``colour_range="map"`` spans the map's own minimum and maximum and says so on the colourbar
(``edc_lab.viz.model_plots.discrepancy_colours``), in ``plot_discrepancy_row``,
``plot_discrepancy_stages`` and the notebook-03 widget's view.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from edc_lab.models import build_model
from edc_lab.viz.model_plots import (
    COLOUR_RANGES,
    discrepancy_colours,
    plot_discrepancy_row,
    plot_discrepancy_stages,
)
from edc_lab.viz.widgets import discrepancy_view


def _colourbar_labels(figure) -> list[str]:
    return [ax.get_ylabel() for ax in figure.axes if ax.get_ylabel().startswith("D")]


def test_the_colours_span_zero_to_one_or_the_map_and_say_which():
    near_half = np.array([[0.42, 0.47], [0.51, 0.45]])
    assert discrepancy_colours(near_half) == (0.0, 1.0, "D (0–1)")
    low, high, label = discrepancy_colours(near_half, "map")
    assert (low, high) == (pytest.approx(0.42), pytest.approx(0.51))
    assert label == "D (this map: 0.42–0.51, not 0–1)"
    low, high, _ = discrepancy_colours(torch.full((1, 1, 4, 4), 0.5), "map")  # a constant map: a tiny range
    assert low == pytest.approx(0.5) and high == pytest.approx(0.501)
    assert COLOUR_RANGES == ("0-1", "map")
    with pytest.raises(ValueError, match=r"^colour_range: expected one of \('0-1', 'map'\), found 'auto'"):
        discrepancy_colours(near_half, "auto")


def test_the_discrepancy_row_draws_d_on_the_range_it_names():
    generator = torch.Generator().manual_seed(0)
    optical, sar = torch.rand(4, 32, 32, generator=generator), torch.rand(2, 32, 32, generator=generator)
    mask = torch.zeros(32, 32)
    mask[:, :12] = 1
    discrepancy = 0.45 + 0.05 * torch.rand(1, 1, 8, 8, generator=generator)
    for colour_range, expected in (("0-1", (0.0, 1.0)), ("map", (float(discrepancy.min()), float(discrepancy.max())))):
        figure = plot_discrepancy_row(optical, sar, discrepancy, mask, colour_range=colour_range)
        d_panel = figure.axes[2].images[0]
        assert d_panel.get_clim() == pytest.approx(expected, abs=0.02)  # bilinear upsampling stays inside
        assert len(_colourbar_labels(figure)) == 1
    assert "not 0–1" in _colourbar_labels(figure)[0]


def test_the_stage_figure_gives_each_map_its_own_colourbar_on_request():
    torch.manual_seed(0)
    optical = torch.rand(4, 64, 64)
    mask = torch.zeros(64, 64)
    mask[:, :32] = 1
    maps = [0.4 + 0.1 * torch.rand(1, 1, 64 // s, 64 // s) for s in (4, 8, 16, 32)]
    shared = plot_discrepancy_stages(optical, mask, maps)
    stage_panels = [ax for ax in shared.axes if ax.get_title().startswith("D stage")]
    assert len(_colourbar_labels(shared)) == 1 and all(ax.images[0].get_clim() == (0.0, 1.0) for ax in stage_panels)
    own = plot_discrepancy_stages(optical, mask, maps, title="t", colour_range="map")
    labels = _colourbar_labels(own)
    assert len(labels) == 4 and all(label.startswith("D (this map: ") for label in labels)
    panels = [ax for ax in own.axes if ax.get_title().startswith("D stage")]
    for ax, values in zip(panels, maps):
        assert ax.images[0].get_clim() == pytest.approx((float(values.min()), float(values.max())))
    assert "own colour range" in own._suptitle.get_text()
    with pytest.raises(ValueError, match="^colour_range: expected one of"):
        plot_discrepancy_stages(optical, mask, maps, colour_range="0-100")


def test_the_widget_view_passes_the_colour_range_on():
    torch.manual_seed(0)
    models = {"untrained": build_model("edc_tiny").eval()}
    default = discrepancy_view(models, seed=2, cover=0.5, stage=1, size=64)
    own = discrepancy_view(models, seed=2, cover=0.5, stage=1, size=64, colour_range="map")
    assert "D (0–1)" in _colourbar_labels(default)
    assert any(label.startswith("D (this map: ") for label in _colourbar_labels(own))
    assert own.axes[2].images[0].get_clim()[1] - own.axes[2].images[0].get_clim()[0] < 0.5  # untrained: narrow
    with pytest.raises(ValueError, match="^colour_range: expected one of"):
        discrepancy_view(models, size=64, colour_range="auto")
