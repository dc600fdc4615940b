"""Notebook 04's views of DCHF for trained arms: the model's own R (oracle, constant, learnt), the key
bias, shared colour ranges, and the widget's model control."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import math

import numpy as np
import pytest
import torch

from edc_lab.models import build_model
from edc_lab.models.dchf import RELIABILITY_EPS
from edc_lab.viz import fusion_widgets
from edc_lab.viz.fusion_widgets import (
    KEY_BIAS_RANGE,
    MIN_VISIBLE_SPAN,
    dchf_gating_view,
    dchf_gating_widget,
    dchf_ranges,
    dchf_stage_maps,
    plot_dchf_gating,
    plot_dchf_models,
    scene_sample,
)


@pytest.fixture(scope="module")
def arms():
    built = {}
    for arm in ("learnt", "constant", "oracle"):
        torch.manual_seed(0)
        built[arm] = build_model("edc_tiny", reliability=arm).eval()
    return built


@pytest.fixture(scope="module")
def scene():
    return scene_sample(7, 0.5, 64, clouds="opaque")


def stage_maps(model, scene, stage=1, reliability="model"):
    return dchf_stage_maps(model, scene["optical"][None], scene["sar"][None], stage, reliability, scene["cloud_mask"])


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_the_oracle_arm_is_shown_with_its_own_reliability(arms, scene, stage):
    maps = stage_maps(arms["oracle"], scene, stage)
    size = maps["reliability"].shape[-2:]
    pooled = torch.nn.functional.adaptive_avg_pool2d(scene["cloud_mask"][None, None], size)
    # the oracle's R = 1 - the mask pooled to the stage (not the model's untrained D)
    assert torch.allclose(maps["reliability"], 1 - pooled, atol=1e-6)
    assert torch.allclose(maps["key_bias"], torch.log(maps["cell_reliability"] + RELIABILITY_EPS))


def test_the_constant_arm_has_flat_reliability_and_equal_key_bias(arms, scene):
    maps = stage_maps(arms["constant"], scene)
    assert torch.all(maps["reliability"] == 0.5)
    assert torch.allclose(maps["key_bias"], torch.full_like(maps["key_bias"], math.log(0.5 + RELIABILITY_EPS)))
    # equal key biases: the bias cancels in the softmax, attention comes from the tokens alone
    assert maps["attention_received"].sum().item() == pytest.approx(1.0, abs=1e-5)


def test_a_learnt_arm_and_the_earlier_name_learnt_give_the_same_maps(arms, scene):
    first = stage_maps(arms["learnt"], scene, reliability="model")
    second = stage_maps(arms["learnt"], scene, reliability="learnt")
    assert torch.equal(first["reliability"], second["reliability"])
    assert torch.equal(first["global_context"], second["global_context"])


def test_an_all_cloud_cell_gets_the_key_bias_of_log_eps(arms, scene):
    mask = scene["cloud_mask"].clone()
    mask[:32, :32] = 1.0
    maps = dchf_stage_maps(arms["learnt"], scene["optical"][None], scene["sar"][None], 1, "cloud mask", mask)
    assert maps["key_bias"][0, 0, 0, 0].item() == pytest.approx(math.log(RELIABILITY_EPS), abs=1e-4)
    assert maps["key_bias"].max().item() <= math.log(1 + RELIABILITY_EPS) + 1e-6


def test_the_oracle_needs_the_mask_and_says_so(arms, scene):
    with pytest.raises(ValueError, match="cloud_mask"):
        dchf_stage_maps(arms["oracle"], scene["optical"][None], scene["sar"][None], 1)


def test_shared_ranges_cover_every_model_and_stretch_only_flat_maps(arms, scene):
    oracle = stage_maps(arms["oracle"], scene)
    constant = stage_maps(arms["constant"], scene)
    ranges = dchf_ranges(oracle, constant)
    assert ranges["D"][:2] == (0.0, 1.0) and not ranges["D"][2]  # the oracle's R spans 0-1
    assert ranges["key bias"][:2] == KEY_BIAS_RANGE
    assert ranges["G"][1] >= max(m["global_context"].abs().mean(1).max().item() for m in (oracle, constant)) - 1e-6
    # alone, the constant arm's D (0.5 everywhere) would look flat on 0-1: its range is stretched
    flat = dchf_ranges(constant)
    low, high, stretched = flat["D"]
    assert stretched and high - low < MIN_VISIBLE_SPAN and low <= 0.5 <= high


def test_a_stretched_range_says_so_on_its_colourbar(arms, scene):
    maps = stage_maps(arms["constant"], scene)
    figure = plot_dchf_gating(maps, scene["optical"], scene["cloud_mask"])
    labels = [ax.get_ylabel() for ax in figure.axes if ax.get_ylabel()]
    assert len(labels) == 7
    assert any("not 0–1" in label for label in labels)


def test_the_model_comparison_shares_one_range_per_column(arms, scene):
    maps = {name: stage_maps(model, scene) for name, model in arms.items()}
    figure = plot_dchf_models(maps, scene["cloud_mask"], title="untrained arms")
    images = [image for ax in figure.axes for image in ax.get_images()]
    assert len(images) == 3 * len(maps)
    for column in range(3):
        limits = {images[row * 3 + column].get_clim() for row in range(len(maps))}
        assert len(limits) == 1, f"column {column}: colour ranges differ between models: {limits}"
    with pytest.raises(ValueError, match="maps"):
        plot_dchf_models({}, scene["cloud_mask"])


def test_the_view_picks_a_model_by_name(arms):
    oracle = dchf_gating_view(arms, model="oracle", cloud_cover=0.5, size=64, clouds="opaque")
    constant = dchf_gating_view(arms, model="constant", cloud_cover=0.5, size=64, clouds="opaque")
    r_oracle = [np.asarray(im.get_array()) for ax in oracle.axes for im in ax.get_images()][3]
    r_constant = [np.asarray(im.get_array()) for ax in constant.axes for im in ax.get_images()][3]
    assert np.ptp(r_oracle) > 0.9 and np.ptp(r_constant) == 0
    with pytest.raises(ValueError, match="model"):
        dchf_gating_view(arms, model="teacher", size=64)
    with pytest.raises(ValueError, match="cloud_model"):
        dchf_gating_view(arms, size=64, clouds="fog")


def test_the_widget_has_a_model_control_when_given_several(arms, monkeypatch):
    calls = []
    monkeypatch.setattr(fusion_widgets, "dchf_gating_view", lambda models, **values: calls.append(values))
    widget = dchf_gating_widget(arms, size=64, model="oracle", clouds="opaque")
    assert len(calls) == 1 and calls[0]["model"] == "oracle" and calls[0]["clouds"] == "opaque"
    dropdown = widget.children[0]
    assert list(dropdown.options) == list(arms)
    dropdown.value = "constant"
    assert len(calls) == 2 and calls[-1]["model"] == "constant"
