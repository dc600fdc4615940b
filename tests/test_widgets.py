"""The widget callbacks of notebooks 01–03, without a browser: each draws a figure that follows its
controls, rejects a bad control value by name, and the ipywidgets wrapper draws on creation."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from edc_lab.data.sample import to_torch  # noqa: E402
from edc_lab.data.synthetic import synthetic_scene  # noqa: E402
from edc_lab.models import build_model  # noqa: E402
from edc_lab.viz import widgets as widget_views  # noqa: E402
from edc_lab.viz.widgets import (  # noqa: E402
    carrier_maps,
    carrier_view,
    cloud_view,
    discrepancy_for,
    discrepancy_view,
)

SIZE = 64


def _images(figure) -> list[np.ndarray]:
    return [np.asarray(image.get_array()) for ax in figure.axes for image in ax.images]


def _same_images(first, second) -> bool:
    a, b = _images(first), _images(second)
    return len(a) == len(b) and all(x.shape == y.shape and np.allclose(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def stem_tokens():
    torch.manual_seed(0)
    model = build_model("edc_tiny").eval()
    sample = to_torch(synthetic_scene(3, size=SIZE, cloud_cover=0.0))
    with torch.no_grad():
        tokens = model.encoder.optical_stem(sample["optical"][None])  # (1, 24, 16, 16)
    return sample["optical"], tokens


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"untrained": build_model("edc_tiny").eval(), "no fusion": build_model("edc_no_dchf").eval()}


# ------------------------------------------------------------------------------------------------ 01


def test_cloud_view_follows_its_controls_and_is_deterministic():
    base = cloud_view(0.5, 0.8, 0.3, seed=1, size=SIZE)
    assert _same_images(base, cloud_view(0.5, 0.8, 0.3, seed=1, size=SIZE))
    titles = [ax.get_title() for ax in base.axes]
    assert "true colour" in titles and "SAR VV" in titles and any(t.startswith("cloud mask (5") for t in titles)
    assert "0.50 requested" in base._suptitle.get_text()
    for changed in (dict(cloud_cover=0.2), dict(thickness=0.3), dict(haze=0.0), dict(seed=2)):
        values = dict(cloud_cover=0.5, thickness=0.8, haze=0.3, seed=1) | changed
        assert not _same_images(base, cloud_view(**values, size=SIZE)), changed
    # the SAR panels do not change with the clouds: radar sees through them
    sar = [np.asarray(ax.images[0].get_array()) for ax in base.axes if ax.get_title() == "SAR VV"][0]
    other = cloud_view(0.9, 1.0, 0.8, seed=1, size=SIZE)
    assert np.array_equal(sar, [np.asarray(ax.images[0].get_array()) for ax in other.axes if ax.get_title() == "SAR VV"][0])


@pytest.mark.parametrize("name, values", [
    ("cloud_cover", dict(cloud_cover=1.5)), ("thickness", dict(thickness=0.0)), ("haze", dict(haze=-0.1)),
    ("seed", dict(seed=-1)), ("seed", dict(seed=1.5)), ("cloud_cover", dict(cloud_cover="half")),
])
def test_cloud_view_names_the_bad_control(name, values):
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        cloud_view(**values, size=SIZE)


def test_plots_carry_units_and_the_shared_legend():
    from edc_lab.data.sample import WHU_CLASSES

    figure = cloud_view(0.5, 0.8, 0.3, seed=1, size=SIZE)
    labels = [ax.get_ylabel() for ax in figure.axes]
    assert labels.count("backscatter (dB)") == 2  # one colourbar per SAR panel, in dB
    legend = [ax.get_legend() for ax in figure.axes if ax.get_legend() is not None][0]
    assert [text.get_text() for text in legend.get_texts()] == list(WHU_CLASSES)
    width, _ = figure.get_size_inches()
    assert width <= 10
    grid = [ax.get_subplotspec() for ax in figure.axes if ax.get_subplotspec() is not None]
    assert len(grid) == 6 and grid[0].get_gridspec().get_geometry() == (2, 3)  # at most three panels a row


# ------------------------------------------------------------------------------------------------ 02


def test_carrier_maps_reach_follows_window_and_carriers(stem_tokens):
    _, tokens = stem_tokens
    for window, carriers in ((4, 1), (8, 2), (8, 4), (16, 2)):
        maps = carrier_maps(tokens, window, carriers, token=(5, 9))
        cell = window // carriers
        assert maps["cell"] == cell and maps["carrier"] == (5 // cell, 9 // cell)
        side = -(-16 // window) * carriers
        assert maps["carrier_shape"] == (side, side)
        assert abs(float(maps["global"].sum()) - 1) < 1e-5 and maps["global"].shape == (side, side)
        rows, cols = (maps["local"] > 0).nonzero().unbind(1)
        top, left = (5 // window) * window, (9 // window) * window
        # the local step sees exactly the token's own window
        assert (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) == (
            top, top + window - 1, left, left + window - 1)


def test_carrier_view_changes_with_each_control(stem_tokens):
    optical, tokens = stem_tokens
    base = carrier_view(optical, tokens, window=8, carriers=2, row=5, col=9)
    assert _same_images(base, carrier_view(optical, tokens, window=8, carriers=2, row=5, col=9))
    assert [ax.get_ylabel() for ax in base.axes].count("attention weight") == 2
    assert "token (5, 9) -> carrier (1, 2)" in base._suptitle.get_text()
    for changed in (dict(window=4), dict(carriers=1), dict(row=13), dict(col=1)):
        values = dict(window=8, carriers=2, row=5, col=9) | changed
        figure = carrier_view(optical, tokens, **values)
        assert not _same_images(base, figure), changed
    # moving the token within its carrier cell changes only the marker, not the attention
    moved = carrier_view(optical, tokens, window=8, carriers=2, row=4, col=8)
    assert _same_images(base, moved)
    assert base.axes[0].lines[-1].get_xdata()[0] != moved.axes[0].lines[-1].get_xdata()[0]  # the marker


@pytest.mark.parametrize("name, values", [
    ("carriers", dict(window=8, carriers=3)), ("window", dict(window=0)), ("carriers", dict(carriers=0)),
    ("token", dict(row=16)), ("token", dict(col=-1)),
])
def test_carrier_view_names_the_bad_control(stem_tokens, name, values):
    optical, tokens = stem_tokens
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        carrier_view(optical, tokens, **values)


# ------------------------------------------------------------------------------------------------ 03


def test_discrepancy_view_shows_the_chosen_stage_and_its_auroc(models):
    from edc_lab.models.discrepancy import discrepancy_auroc

    sample, discrepancy, auroc = discrepancy_for(models, "untrained", seed=2, cover=0.5, stage=2, size=SIZE)
    assert discrepancy.shape == (1, 1, SIZE // 8, SIZE // 8)
    assert auroc == discrepancy_auroc(discrepancy, sample["cloud_mask"][None])
    figure = discrepancy_view(models, "untrained", seed=2, cover=0.5, stage=2, size=SIZE)
    assert f"AUROC of D against the mask {auroc:.2f}" in figure._suptitle.get_text()
    assert "D (0–1)" in [ax.get_ylabel() for ax in figure.axes]
    assert "backscatter (dB)" in [ax.get_ylabel() for ax in figure.axes]
    assert _same_images(figure, discrepancy_view(models, "untrained", seed=2, cover=0.5, stage=2, size=SIZE))
    for changed in (dict(stage=1), dict(seed=3), dict(cover=0.3)):
        values = dict(model="untrained", seed=2, cover=0.5, stage=2) | changed
        assert not _same_images(figure, discrepancy_view(models, **values, size=SIZE)), changed
    # the model's mode is left as it was
    models["untrained"].train()
    discrepancy_for(models, "untrained", size=SIZE)
    assert models["untrained"].training
    models["untrained"].eval()


@pytest.mark.parametrize("name, values", [
    ("model", dict(model="teacher")), ("stage", dict(stage=5)), ("stage", dict(stage=True)),
    ("cover", dict(cover=0.0)), ("cover", dict(cover=1.2)), ("seed", dict(seed=-3)),
    ("model", dict(model="no fusion")),
])
def test_discrepancy_view_names_the_bad_control(models, name, values):
    with pytest.raises(ValueError, match=f"^{name}: "):
        discrepancy_view(models, **values, size=SIZE)


# -------------------------------------------------------------------------------------------- wrappers


def test_widgets_draw_their_figure_on_creation(monkeypatch, stem_tokens, models):
    pytest.importorskip("ipywidgets")
    calls = []
    for name in ("cloud_view", "carrier_view", "discrepancy_view"):
        original = getattr(widget_views, name)
        monkeypatch.setattr(widget_views, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    optical, tokens = stem_tokens
    boxes = [widget_views.cloud_widget(size=SIZE), widget_views.carrier_widget(optical, tokens, row=3, col=3),
             widget_views.discrepancy_widget(models, size=SIZE)]
    assert calls == ["cloud_view", "carrier_view", "discrepancy_view"]  # one drawing each, before any move
    # moving a control draws again; a bad choice is printed, not raised
    slider = boxes[0].children[0].children[0]
    slider.value = 0.3
    assert calls[-1] == "cloud_view" and len(calls) == 4
    boxes[1].children[1].children[1].value = 1  # carriers c = 1
    assert calls[-1] == "carrier_view"
