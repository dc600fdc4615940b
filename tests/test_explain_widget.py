"""The attribution explorer's callback and controls, without a browser."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from edc_lab.data.sample import to_torch
from edc_lab.data.synthetic import synthetic_scene
from edc_lab.explain import REGION_CHOICES, attribution_view, attribution_widget, region_for
from edc_lab.models import build_model


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    models = {"edc_tiny": build_model("edc_tiny").eval(), "sar_only": build_model("sar_only").eval()}
    sample = to_torch(synthetic_scene(5, size=32, cloud_cover=0.5))
    return models, sample


def test_region_for_each_choice():
    mask = torch.zeros(6, 7, dtype=torch.bool)
    mask[:2] = True
    assert region_for("all", mask) is None
    assert torch.equal(region_for("cloudy", mask), mask)
    assert torch.equal(region_for("clear", mask), ~mask)
    assert region_for("pixel", mask, (3, 4)) == (3, 4)
    with pytest.raises(ValueError, match="no cloudy pixel"):
        region_for("cloudy", torch.zeros(6, 7))
    with pytest.raises(ValueError, match="expected one of"):
        region_for("everywhere", mask)
    assert set(REGION_CHOICES) == {"all", "cloudy", "clear", "pixel"}


def test_view_draws_maps_and_shares_whose_values_add_up(setting):
    models, sample = setting
    maps, bars, summary = attribution_view(models, sample, "edc_tiny", target=0, region="cloudy", n_steps=8,
                                           show=False)
    assert len(maps.axes) == 3 and len(bars.axes) == 1  # two maps + colourbar; one bar chart
    values = sum(summary[f"value_{g}"] for g in ("optical_cloudy", "optical_clear", "sar_cloudy", "sar_clear"))
    assert values == pytest.approx(summary["score"] - summary["baseline_score"], abs=1e-4)  # Shapley efficiency
    assert 0.0 <= summary["sar_share"] <= 1.0
    plt.close("all")


def test_view_of_a_sar_only_model_gives_sar_everything(setting):
    models, sample = setting
    _, _, summary = attribution_view(models, sample, "sar_only", target=1, region="pixel", row=5, col=9,
                                     method="input_x_gradient", baseline="zero", n_steps=4, show=False)
    assert summary["value_optical_cloudy"] == 0.0 and summary["value_optical_clear"] == 0.0
    assert summary["sar_share"] == pytest.approx(1.0)
    plt.close("all")


def test_view_refuses_an_unknown_model(setting):
    models, sample = setting
    with pytest.raises(ValueError, match="model: expected one of"):
        attribution_view(models, sample, "unet", target=0, show=False)


def test_widget_offers_every_control_and_the_cloudfree_baseline(setting):
    models, sample = setting
    box = attribution_widget(models, sample, class_names=tuple(f"c{i}" for i in range(7)), n_steps=4)
    descriptions = {child.description for row in box.children[:-1]
                    for child in getattr(row, "children", (row,))}
    assert {"model", "class", "method", "baseline", "region", "pixel row", "pixel col"} <= descriptions
    baseline = next(child for child in box.children[0].children if child.description == "baseline")
    assert "cloudfree" in baseline.options  # the synthetic sample has optical_clear
    plt.close("all")
