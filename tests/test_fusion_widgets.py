"""The widget callbacks of notebooks 04 and 05, without a browser: behaviour and the maths they show."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from edc_lab.models import build_model
from edc_lab.models.dchf import reliability_weighted_pool
from edc_lab.train.losses import region_weight
from edc_lab.viz import fusion_widgets
from edc_lab.viz.evidence import cover_sweep, load_evidence
from edc_lab.viz.fusion_widgets import (
    MIN_DPI,
    attention_received,
    cloud_removal_errors,
    dchf_gating_view,
    dchf_gating_widget,
    dchf_stage_maps,
    distillation_maps,
    distillation_view,
    distillation_widget,
    plot_cloud_removal,
    pooling_weights,
    scene_sample,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("edc_tiny").eval()


@pytest.fixture(scope="module")
def teacher_student():
    torch.manual_seed(1)
    teacher = build_model("edc_tiny").eval()
    torch.manual_seed(2)
    student = build_model("edc_tiny").eval()
    return teacher, {"untrained": student}


def figure_pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


def image_data(fig) -> list[np.ndarray]:
    return [np.asarray(image.get_array()) for ax in fig.axes for image in ax.get_images()]


# ----------------------------------------------------------------- pooling weights


def test_pooling_weights_sum_to_one_per_cell_and_vanish_where_unreliable():
    generator = torch.Generator().manual_seed(0)
    reliability = torch.rand(2, 1, 10, 13, generator=generator)   # not multiples of the cell
    reliability[0, 0, :4, :4] = 0.0                                 # one cell with no reliable pixel
    reliability[1, 0, 5:, 7] = 0.0                                  # scattered unreliable pixels
    weights = pooling_weights(reliability, cell=4)
    assert weights.shape == reliability.shape
    padded = torch.nn.functional.pad(weights, (0, 3, 0, 2))
    per_cell = padded.unfold(2, 4, 4).unfold(3, 4, 4).sum(dim=(-1, -2))
    expected = torch.ones_like(per_cell)
    expected[0, 0, 0, 0] = 0.0
    assert torch.allclose(per_cell, expected, atol=1e-5)
    assert (weights[reliability == 0] == 0).all()


def test_pooling_weights_reproduce_the_dchf_token():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(1, 3, 12, 9, generator=generator)
    reliability = torch.rand(1, 1, 12, 9, generator=generator)
    reliability[..., :3, :3] = 0.0
    pooled, _ = reliability_weighted_pool(features, reliability, cell=3)
    weighted = torch.nn.functional.pad(pooling_weights(reliability, cell=3) * features, (0, 0, 0, 0))
    by_hand = weighted.unfold(2, 3, 3).unfold(3, 3, 3).sum(dim=(-1, -2))
    assert torch.allclose(pooled, by_hand, atol=1e-5)


def test_pooling_weights_are_uniform_when_everything_is_reliable():
    weights = pooling_weights(torch.ones(1, 1, 8, 8), cell=4)
    assert torch.allclose(weights, torch.full_like(weights, 1 / 16))


@pytest.mark.parametrize("cell", [0, -2, 2.5])
def test_pooling_weights_reject_a_bad_cell(cell):
    with pytest.raises(ValueError, match="cell"):
        pooling_weights(torch.ones(1, 1, 4, 4), cell=cell)


def test_pooling_weights_reject_bad_reliability():
    with pytest.raises(ValueError, match="reliability"):
        pooling_weights(torch.ones(1, 2, 4, 4), cell=2)
    with pytest.raises(ValueError, match="reliability"):
        pooling_weights(torch.full((1, 1, 4, 4), 1.5), cell=2)


def test_attention_received_sums_to_one():
    attention = torch.rand(2, 3, 5, 5).softmax(dim=-1)
    received = attention_received(attention)
    assert received.shape == (2, 5)
    assert torch.allclose(received.sum(-1), torch.ones(2))
    with pytest.raises(ValueError, match="attention"):
        attention_received(torch.rand(2, 5, 5))


# ----------------------------------------------------------------- 04: DCHF widget


def test_stage_maps_with_the_cloud_mask_keep_cloudy_cells_out(model):
    sample = scene_sample(7, 0.5, 128)
    cloud_mask = sample["cloud_mask"].clone()
    cloud_mask[:64, :64] = 1.0  # the top-left quadrant all cloud: 2 x 2 cells of stage 1 with R = 0
    maps = dchf_stage_maps(model, sample["optical"][None], sample["sar"][None], 1, "cloud mask", cloud_mask)
    reliability = maps["reliability"]
    assert set(reliability.unique().tolist()) <= {0.0, 1.0}
    assert (maps["pooling_weights"][reliability == 0] == 0).all()
    # a cell with no reliable pixel receives (almost) no attention
    empty = maps["cell_reliability"] == 0
    assert empty[0, 0, :2, :2].all()
    assert maps["attention_received"][empty].max() < 1e-5
    assert torch.allclose(maps["attention_received"].sum(), torch.tensor(1.0), atol=1e-5)
    # the optical gate is bounded by D = 1 - R: zero on every clear pixel
    assert (maps["gates"]["optical"] <= maps["discrepancy"] + 1e-7).all()
    assert model.encoder.fusions[0].keep_attention is False  # restored


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_stage_maps_at_every_stage(model, stage):
    sample = scene_sample(3, 0.4, 64)
    maps = dchf_stage_maps(model, sample["optical"][None], sample["sar"][None], stage)
    fusion = model.encoder.fusions[stage - 1]
    assert maps["cell"] == fusion.cell
    assert maps["pooling_weights"].shape == maps["reliability"].shape
    assert maps["attention_received"].shape[-2:] == maps["cell_reliability"].shape[-2:]


def test_dchf_view_changes_with_the_cloud_cover(model):
    light = dchf_gating_view(model, cloud_cover=0.1, reliability="cloud mask", size=64)
    heavy = dchf_gating_view(model, cloud_cover=0.8, reliability="cloud mask", size=64)
    assert light.dpi >= MIN_DPI and light.get_figwidth() <= 10
    assert not np.array_equal(figure_pixels(light), figure_pixels(heavy))
    # the cloud-mask panel (second image) holds the cover asked for
    assert abs(image_data(light)[1].mean() - 0.1) < 0.02 and abs(image_data(heavy)[1].mean() - 0.8) < 0.02
    # every value panel has a colourbar with a label (units)
    labelled = [ax for ax in light.axes if ax.get_ylabel()]
    assert len(labelled) == 7


def test_dchf_view_changes_with_the_reliability_source(model):
    learnt = image_data(dchf_gating_view(model, cloud_cover=0.5, reliability="learnt", size=64))
    masked = image_data(dchf_gating_view(model, cloud_cover=0.5, reliability="cloud mask", size=64))
    assert not np.allclose(learnt[2], masked[2])  # the reliability panel


@pytest.mark.parametrize("kwargs, name", [
    (dict(cloud_cover=1.5), "cloud_cover"),
    (dict(cloud_cover=-0.1), "cloud_cover"),
    (dict(reliability="oracle"), "reliability"),
    (dict(stage=5), "stage"),
    (dict(stage=0), "stage"),
])
def test_dchf_view_rejects_bad_input(model, kwargs, name):
    with pytest.raises(ValueError, match=name):
        dchf_gating_view(model, size=64, **kwargs)


def test_dchf_view_refuses_a_model_without_dchf():
    plain = build_model("edc_no_dchf").eval()
    with pytest.raises(ValueError, match="model"):
        dchf_gating_view(plain, size=64)
    with pytest.raises(ValueError, match="model"):
        dchf_stage_maps(torch.nn.Linear(2, 2), torch.zeros(1, 4, 8, 8), torch.zeros(1, 2, 8, 8))


def test_dchf_widget_draws_on_creation_and_on_change(model, monkeypatch):
    calls = []
    monkeypatch.setattr(fusion_widgets, "dchf_gating_view", lambda model, **values: calls.append(values))
    widget = dchf_gating_widget(model, size=64)
    assert len(calls) == 1, "the callback must run when the widget is created, before any control moves"
    assert calls[0]["cloud_cover"] == 0.4 and calls[0]["reliability"] == "model" and calls[0]["show"]
    slider = widget.children[0].children[0]
    slider.value = 0.7
    assert len(calls) == 2 and calls[-1]["cloud_cover"] == 0.7


# ----------------------------------------------------------------- 05: distillation widget


def test_distillation_maps_follow_the_region(teacher_student):
    teacher, students = teacher_student
    sample = scene_sample(3, 0.5, 64)
    maps = {region: distillation_maps(teacher, students["untrained"], sample, region)
            for region in ("all", "clear", "cloudy")}
    assert torch.equal(maps["all"]["error"], maps["clear"]["error"])
    assert torch.allclose(maps["clear"]["weight"] + maps["cloudy"]["weight"], maps["all"]["weight"])
    expected = region_weight(sample["cloud_mask"][None], tuple(maps["all"]["error"].shape), "cloudy")[0, 0]
    assert torch.equal(maps["cloudy"]["weight"], expected)
    # where the weight is 0 the loss does not act
    assert (maps["clear"]["weighted"][maps["clear"]["weight"] == 0] == 0).all()
    for region, item in maps.items():
        assert item["level_loss"] == pytest.approx(float((item["weighted"].sum() / item["weight"].sum())), rel=1e-6)
        assert item["losses"] == maps["all"]["losses"]


def test_distillation_view_changes_with_the_region(teacher_student):
    teacher, students = teacher_student
    everywhere = distillation_view(teacher, students, "untrained", region="all")
    cloudy = distillation_view(teacher, students, "untrained", region="cloudy")
    assert everywhere.dpi >= MIN_DPI and everywhere.get_figwidth() <= 10
    assert not np.array_equal(figure_pixels(everywhere), figure_pixels(cloudy))
    weights = image_data(cloudy)[3]
    assert weights.min() == 0 and weights.max() == 1


def test_distillation_view_changes_with_the_cloud_cover(teacher_student):
    teacher, students = teacher_student
    light = image_data(distillation_view(teacher, students, "untrained", region="cloudy", cloud_cover=0.2))
    heavy = image_data(distillation_view(teacher, students, "untrained", region="cloudy", cloud_cover=0.7))
    assert heavy[3].mean() > light[3].mean() + 0.3


@pytest.mark.parametrize("kwargs, name", [
    (dict(student="oracle"), "student"),
    (dict(region="half"), "region"),
    (dict(cloud_cover=2.0), "cloud_cover"),
    (dict(level=5), "level"),
])
def test_distillation_view_rejects_bad_input(teacher_student, kwargs, name):
    teacher, students = teacher_student
    arguments = dict(student="untrained") | kwargs
    with pytest.raises(ValueError, match=name):
        distillation_view(teacher, students, **arguments)


def test_distillation_widget_draws_on_creation_and_on_change(teacher_student, monkeypatch):
    teacher, students = teacher_student
    calls = []
    monkeypatch.setattr(fusion_widgets, "distillation_view", lambda teacher, students, **values: calls.append(values))
    widget = distillation_widget(teacher, students, region="clear")
    assert len(calls) == 1 and calls[0]["region"] == "clear" and calls[0]["student"] == "untrained"
    widget.children[1].value = "cloudy"
    assert len(calls) == 2 and calls[-1]["region"] == "cloudy"


# ----------------------------------------------------------------- 05: cloud removal


def test_cloud_removal_errors_split_by_the_mask():
    truth = torch.zeros(4, 4, 4)
    estimate = truth.clone()
    estimate[:, :2] = 0.5
    mask = torch.zeros(4, 4)
    mask[:2] = 1
    errors = cloud_removal_errors(estimate, truth, mask)
    assert errors["cloudy"] == pytest.approx(0.5) and errors["clear"] == 0.0
    assert np.isnan(cloud_removal_errors(estimate, truth, torch.zeros(4, 4))["cloudy"])
    with pytest.raises(ValueError, match="estimate"):
        cloud_removal_errors(estimate[:3], truth, mask)


def test_plot_cloud_removal_shows_the_estimate_beside_the_truth(model):
    sample = scene_sample(3, 0.5, 64)
    with torch.no_grad():
        estimate = model(sample["optical"][None], sample["sar"][None])["cloudfree"][0]
    perfect = plot_cloud_removal(sample, {"perfect": sample["optical_clear"]})
    assert perfect.get_figwidth() <= 10 and perfect.dpi >= MIN_DPI
    images = image_data(perfect)  # row 1: cloudy input, its error, truth; row 2: estimate, its error, mask
    assert np.array_equal(images[2], images[3])  # the perfect estimate looks exactly like the truth
    assert np.asarray(images[4]).max() == 0     # and its error is 0 everywhere
    assert np.asarray(images[1]).max() > 0      # unlike the cloudy input's
    two = plot_cloud_removal(sample, {"untrained": estimate, "perfect": sample["optical_clear"]})
    assert len(two.axes) == 9 + 3               # 3 x 3 panels and 3 colourbars
    with pytest.raises(ValueError, match="estimates"):
        plot_cloud_removal(sample, {})


# ----------------------------------------------------------------- 04: the "why fuse" evidence


def test_why_fuse_evidence_is_in_the_committed_file():
    from pathlib import Path

    evidence = load_evidence(Path(__file__).parents[1] / "benchmarks" / "results" / "train_evidence.json")
    optical = cover_sweep(evidence, "optical_only")[1]
    sar = cover_sweep(evidence, "sar_only")[1]
    fused = cover_sweep(evidence, "student_no_kd")[1]
    assert (fused > np.maximum(optical, sar)).all()
    assert np.ptp(sar) < 0.5 and optical[0] - optical[-1] > 20
