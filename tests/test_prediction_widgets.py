"""Notebook 06's prediction explorer without a browser (edc_lab.viz.prediction_widgets): the scene it
picks, the errors and the D it shows, the controls it refuses by name, and the widget drawing on creation."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from edc_lab.data.datasets import build_dataset  # noqa: E402
from edc_lab.data.sample import IGNORE_INDEX  # noqa: E402
from edc_lab.models import build_model  # noqa: E402
from edc_lab.viz import prediction_widgets  # noqa: E402
from edc_lab.viz.plots import label_rgb  # noqa: E402
from edc_lab.viz.prediction_widgets import (  # noqa: E402
    MIN_DPI,
    TEST_SCENES,
    plot_prediction,
    prediction_maps,
    prediction_view,
    prediction_widget,
    held_out_scene,
)

SIZE = 64


class ConstantModel(nn.Module):
    """Predicts ``label`` everywhere; its D at every stage is 1 on the left half of the image, 0 on the right."""

    def __init__(self, label: int = 0, classes: int = 7, with_discrepancy: bool = True):
        super().__init__()
        self.label, self.classes, self.with_discrepancy = label, classes, with_discrepancy
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, optical, sar):
        batch, _, height, width = optical.shape
        logits = torch.zeros(batch, self.classes, height, width)
        logits[:, self.label] = 1.0
        maps = []
        if self.with_discrepancy:
            for stage in range(1, 5):
                stride = 2 ** (stage + 1)
                cells = (math.ceil(height / stride), math.ceil(width / stride))
                discrepancy = torch.zeros(batch, 1, *cells)
                discrepancy[..., : cells[1] // 2] = 1.0
                maps.append(discrepancy)
        return {"logits": logits, "cloudfree": None, "discrepancy": maps, "reliability": [], "gates": [],
                "features": []}


@pytest.fixture(scope="module")
def edc():
    torch.manual_seed(0)
    return build_model("edc_tiny").eval()


def _images(figure) -> list[np.ndarray]:
    return [np.asarray(image.get_array()) for ax in figure.axes for image in ax.get_images()]


# ----------------------------------------------------------------- the scene


def test_held_out_scene_is_from_the_test_split_and_only_its_clouds_change():
    light, heavy = held_out_scene(2, 0.2, SIZE), held_out_scene(2, 0.7, SIZE)
    same = build_dataset("synthetic", split="test", size=SIZE, count=3, cloud_cover=0.7)[2]
    assert all(torch.equal(heavy[key], same[key]) for key in ("optical", "sar", "label", "cloud_mask"))
    assert all(torch.equal(light[key], heavy[key]) for key in ("optical_clear", "sar", "label"))
    assert light["cloud_mask"].mean() < heavy["cloud_mask"].mean()
    training = build_dataset("synthetic", split="train", size=SIZE, count=3, cloud_cover=0.7)[2]
    assert not torch.equal(training["label"], heavy["label"])


@pytest.mark.parametrize("arguments, name", [
    (dict(index=-1), "scene"), (dict(index=1.5), "scene"), (dict(cloud_cover=1.0), "cloud_cover"),
    (dict(cloud_cover=-0.1), "cloud_cover"), (dict(cloud_cover="0.5"), "cloud_cover"), (dict(size=16), "size"),
])
def test_held_out_scene_refuses_bad_arguments_by_name(arguments, name):
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        held_out_scene(**arguments)


# ----------------------------------------------------------------- the maps


def test_prediction_maps_count_the_wrong_pixels_per_region():
    sample = held_out_scene(1, 0.5, SIZE)
    sample["label"][:2] = IGNORE_INDEX  # two unlabelled rows: never wrong, never counted
    maps = prediction_maps(ConstantModel(label=0), sample, stage=2)
    label, cloudy = sample["label"], sample["cloud_mask"] > 0.5
    labelled = label != IGNORE_INDEX
    assert torch.equal(maps["prediction"], torch.zeros_like(label))
    assert torch.equal(maps["wrong"], (label != 0) & labelled)
    assert maps["wrong_cloudy"] == pytest.approx(float((label[cloudy & labelled] != 0).float().mean()))
    assert maps["wrong_clear"] == pytest.approx(float((label[~cloudy & labelled] != 0).float().mean()))
    assert not maps["wrong"][:2].any()


def test_prediction_maps_score_d_against_the_cloud_mask():
    sample = held_out_scene(1, 0.5, SIZE)
    sample["cloud_mask"] = torch.zeros(SIZE, SIZE)
    sample["cloud_mask"][:, : SIZE // 2] = 1.0  # clouds exactly where the constant model's D is 1
    maps = prediction_maps(ConstantModel(), sample, stage=3)
    assert maps["stage"] == 3 and tuple(maps["discrepancy"].shape) == (1, 1, 4, 4)
    assert maps["auroc"] == pytest.approx(1.0)
    sample["cloud_mask"] = 1.0 - sample["cloud_mask"]  # clouds where D is 0: an inverted detector
    assert prediction_maps(ConstantModel(), sample, stage=3)["auroc"] == pytest.approx(0.0)


def test_prediction_maps_without_d_or_without_clouds():
    clear = held_out_scene(1, 0.0, SIZE)
    maps = prediction_maps(ConstantModel(with_discrepancy=False), clear)
    assert maps["discrepancy"] is None and math.isnan(maps["auroc"])
    assert math.isnan(maps["wrong_cloudy"]) and not math.isnan(maps["wrong_clear"])
    assert math.isnan(prediction_maps(ConstantModel(), clear)["auroc"])  # no cloud: AUROC undefined


def test_prediction_maps_leave_the_model_in_its_mode(edc):
    edc.train()
    prediction_maps(edc, held_out_scene(0, 0.5, SIZE))
    assert edc.training
    edc.eval()


def test_prediction_maps_refuse_a_stage_that_does_not_exist(edc):
    with pytest.raises(ValueError, match="^stage: expected an integer in 1..4"):
        prediction_maps(edc, held_out_scene(0, 0.5, SIZE), stage=5)


# ----------------------------------------------------------------- the figure


def test_the_figure_shows_the_prediction_the_errors_and_d():
    sample = held_out_scene(4, 0.5, SIZE)
    maps = prediction_maps(ConstantModel(label=3), sample, stage=1)
    figure = plot_prediction(sample, maps)
    assert figure.dpi >= MIN_DPI and figure.get_figwidth() <= 10
    optical, labels, predicted, mask, errors, discrepancy = _images(figure)
    assert np.array_equal(labels, label_rgb(sample["label"]))
    assert np.array_equal(predicted, label_rgb(torch.full_like(sample["label"], 3)))
    assert np.array_equal(errors == 1, maps["wrong"].numpy())  # red exactly where the prediction is wrong
    assert discrepancy.min() == 0.0 and discrepancy.max() == 1.0
    image = figure.axes[5].get_images()[0]
    assert image.get_clim() == (0, 1)  # D on its full scale, with a colourbar
    assert any("D (0 = optical and SAR agree" in ax.get_ylabel() for ax in figure.axes)
    titles = [ax.get_title() for ax in figure.axes]
    assert any(f"{100 * maps['wrong_cloudy']:.1f} % of cloudy" in title for title in titles)
    assert any("AUROC" in title for title in titles)


def test_a_model_without_d_is_said_so():
    sample = held_out_scene(4, 0.5, SIZE)
    figure = plot_prediction(sample, prediction_maps(ConstantModel(with_discrepancy=False), sample))
    assert len(_images(figure)) == 5
    assert any("no discrepancy map" in text.get_text() for text in figure.axes[5].texts)


def test_the_view_follows_its_controls(edc):
    models = {"edc": edc, "constant": ConstantModel(label=2)}
    first = prediction_view(models, "edc", scene=1, cloud_cover=0.3, stage=1, size=SIZE)
    other_scene = prediction_view(models, "edc", scene=2, cloud_cover=0.3, stage=1, size=SIZE)
    other_cover = prediction_view(models, "edc", scene=1, cloud_cover=0.7, stage=1, size=SIZE)
    other_stage = prediction_view(models, "edc", scene=1, cloud_cover=0.3, stage=4, size=SIZE)
    other_model = prediction_view(models, "constant", scene=1, cloud_cover=0.3, stage=1, size=SIZE)
    base = _images(first)
    assert not np.array_equal(base[1], _images(other_scene)[1])    # another scene: other labels
    assert not np.array_equal(base[3], _images(other_cover)[3])    # more cloud: another mask
    assert base[5].shape == _images(other_stage)[5].shape and not np.array_equal(base[5], _images(other_stage)[5])
    assert np.array_equal(_images(other_model)[2], label_rgb(torch.full((SIZE, SIZE), 2)))
    assert "constant: held-out scene 1, cloud cover 0.3" in other_model._suptitle.get_text()


@pytest.mark.parametrize("arguments, name", [
    (dict(model="missing"), "model"), (dict(scene=TEST_SCENES), "scene"), (dict(scene=-1), "scene"),
    (dict(cloud_cover=1.5), "cloud_cover"), (dict(stage=0), "stage"), (dict(stage=True), "stage"),
])
def test_the_view_refuses_bad_controls_by_name(edc, arguments, name):
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        prediction_view({"edc": edc}, **arguments)


def test_the_view_needs_a_model():
    with pytest.raises(ValueError, match="^models: expected at least one"):
        prediction_view({})


def test_the_widget_draws_on_creation_and_on_change(edc, monkeypatch):
    pytest.importorskip("ipywidgets")
    calls = []
    monkeypatch.setattr(prediction_widgets, "prediction_view", lambda models, **values: calls.append(values))
    widget = prediction_widget({"edc": edc, "constant": ConstantModel()}, scene=3, cloud_cover=0.4, size=SIZE)
    assert calls == [dict(model="edc", scene=3, cloud_cover=0.4, stage=1, size=SIZE)]
    model_menu, stage_menu = widget.children[0].children
    scene_slider, cover_slider = widget.children[1].children
    stage_menu.value = 3
    model_menu.value = "constant"
    assert calls[-1] == dict(model="constant", scene=3, cloud_cover=0.4, stage=3, size=SIZE)
    assert scene_slider.max == TEST_SCENES - 1 and cover_slider.max < 1.0


def test_the_widget_refuses_bad_defaults_at_once(edc):
    pytest.importorskip("ipywidgets")
    with pytest.raises(ValueError, match="^stage: expected"):
        prediction_widget({"edc": edc}, stage=7)


# ----------------------------------------------------------------- 05's cloud-removal figure
# (edc_lab.viz.fusion_widgets.plot_cloud_removal / cloud_removal_errors: the stretch of the cloudy
# input and the per-band bias that a colour cast shows up in)


def test_cloud_removal_errors_give_the_signed_bias_per_band():
    from edc_lab.viz.fusion_widgets import cloud_removal_errors

    truth = torch.full((4, 4, 4), 0.2)
    estimate = truth.clone()
    estimate[2] -= 0.05          # red too dark everywhere: a green cast
    estimate[0, :2] += 0.1       # blue too bright under the clouds only
    mask = torch.zeros(4, 4)
    mask[:2] = 1
    errors = cloud_removal_errors(estimate, truth, mask)
    assert errors["bias_cloudy"] == pytest.approx([0.1, 0.0, -0.05, 0.0])
    assert errors["bias_clear"] == pytest.approx([0.0, 0.0, -0.05, 0.0])
    assert errors["clear"] == pytest.approx(0.05 / 4)
    assert all(math.isnan(value) for value in cloud_removal_errors(estimate, truth, torch.zeros(4, 4))["bias_cloudy"])


def test_cloud_removal_figure_shows_the_cloudy_input_with_the_series_stretch():
    from edc_lab.viz.fusion_widgets import plot_cloud_removal
    from edc_lab.viz.plots import rgb

    sample = held_out_scene(3, 0.5, SIZE)
    figure = plot_cloud_removal(sample, {"perfect": sample["optical_clear"]})
    cloudy_shown, _, truth_shown, estimate_shown, *_ = _images(figure)
    mask = sample["cloud_mask"].numpy()
    assert np.array_equal(cloudy_shown, rgb(sample["optical"], cloud_mask=mask))
    assert np.array_equal(truth_shown, estimate_shown)  # the estimate on the truth's range
    assert (cloudy_shown[mask == 0] < 1).any(axis=-1).mean() > 0.9  # the ground shows, not a white sheet
    on_truth_range = rgb(sample["optical"], reference=sample["optical_clear"])
    assert (on_truth_range == 1).all(axis=-1).mean() > (cloudy_shown == 1).all(axis=-1).mean()
    assert "stretch: its clear pixels" in figure.axes[0].get_title()
    assert "stretch: the truth" in figure.axes[3].get_title()
